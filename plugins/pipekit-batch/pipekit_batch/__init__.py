"""pipekit-batch: OpenAI's and Anthropic's batch APIs as pipekit batch providers.

A pipeline module names its providers and a phase picks one::

    from pipekit_batch import AnthropicBatch, OpenAIBatch

    BATCHES = {"openai": OpenAIBatch(endpoint="/v1/chat/completions"), "claude": AnthropicBatch()}

    @phase(2, batch="openai")
    def summarise(item_id, text):
        return [{"custom_id": item_id, "body": {"model": "gpt-4o-mini", "messages": [...]}}]

Both are built on the official SDKs, which read ``OPENAI_API_KEY`` /
``OPENAI_BASE_URL`` and ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``; the
SDK is imported and its client made on first use, so declaring a provider
needs neither. ``pipekit_batch.fakeserver`` serves fakes of both APIs on
127.0.0.1 for offline runs and tests.

Installed, it is also the ``batch`` entry point, so ``pipekit plugins`` lists
its version; it implements no hook.
"""

from __future__ import annotations

import importlib.metadata

from pipekit_batch.anthropic_batch import AnthropicBatch
from pipekit_batch.openai_batch import OpenAIBatch


__version__ = importlib.metadata.version("pipekit-batch")

__all__ = ["AnthropicBatch", "OpenAIBatch", "__version__"]
