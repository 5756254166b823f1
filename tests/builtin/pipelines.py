"""Pipelines shared by the tests of the built-in plugins."""

from __future__ import annotations


#: Three phases, costs on two; item ids starting with "bad" fail phase 2.
BOOKS = '''
    from pipekit import phase, PhaseResult

    ITEM_NOUN = "books"

    @phase(1)
    def research(item_id):
        return f"notes on {item_id}"

    @phase(2)
    def draft(item_id, ctx):
        ctx.record_cost(tokens_in=1000, tokens_out=200, cost_usd=0.25)
        if item_id.startswith("bad"):
            raise RuntimeError(f"model refused {item_id}\\nsecond line of the error")
        return "draft"

    @phase(3, critical=False)
    async def review(item_id):
        print(f"reviewing {item_id}")
        return PhaseResult("ok", tokens_in=10, tokens_out=5, cost_usd=0.5)
'''

#: Phase 1 waits until the file named by env RELEASE exists (or 60 s), so a
#: test can look at a run while its items are in flight.
GATED = '''
    import os, time
    from pathlib import Path
    from pipekit import phase

    ITEM_NOUN = "books"

    def items():
        return [f"book-{i:02d}" for i in range(12)]

    @phase(1)
    def wait_for_release(item_id, ctx):
        release = Path(os.environ["RELEASE"])
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ctx.record_cost(tokens_in=100, tokens_out=10, cost_usd=0.125)
        print(f"handler output for {item_id}")
        return "released"

    @phase(2)
    def write(item_id):
        return "written"
'''

#: Phase 1 is always cached; phase 2 fails its first attempt (once per folder) and is retried.
CACHED_AND_FLAKY = '''
    from pathlib import Path
    from pipekit import phase

    @phase(1, cache=lambda item_id: True)
    def cached(item_id):
        return "never"

    @phase(2, retries=2, retry_backoff=0)
    def flaky(item_id, ctx):
        ctx.record_cost(tokens_in=5, cost_usd=0.01)
        marker = Path("tried")
        if not marker.exists():
            marker.touch()
            raise ConnectionError("try again")
        return "ok"
'''
