"""``python -m pipekit_batch.fakeserver openai|anthropic --port 0 --port-file F --state-dir D``."""

from __future__ import annotations

from pipekit_batch.fakeserver.process import main


if __name__ == "__main__":
    raise SystemExit(main())
