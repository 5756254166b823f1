"""What a person sees: the progress display and the stream that keeps stdout for events."""
