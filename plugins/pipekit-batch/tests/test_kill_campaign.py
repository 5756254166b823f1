"""SIGKILL at random moments while a batch phase submits, polls and collects through the
openai SDK: every request reaches the provider once, every item completes once.

It runs in the normal suite (50 kills, about 45 s). ``KC_SEED=N`` picks the kill moments
and ``KC_KILLS=N`` the number of kills; ``PIPEKIT_BATCH_CAMPAIGN=anthropic`` runs the same
campaign through the anthropic SDK, where a kill between an upload and its record is at
least once (docs/batches.md), so it reports requests sent twice rather than failing on them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from pipekit.testing import PipeTester
from pipekit_batch.fakeserver import FakeServer


PIPELINE = """
from pathlib import Path
from pipekit import phase
from pipekit_batch import AnthropicBatch
from pipekit_batch import OpenAIBatch

BATCHES = {"openai": OpenAIBatch(endpoint="/v1/chat/completions", price=(0.15, 0.60)),
           "anthropic": AnthropicBatch(price=(3.0, 15.0))}
PROVIDER = "{provider}"
CALLS = Path(__file__).with_name("calls.log")

def items():
    return Path(__file__).with_name("items.txt").read_text().split()

@phase(1, batch=PROVIDER, retries=1)
def ask(item_id):
    field = "body" if PROVIDER == "openai" else "params"
    return [{"custom_id": f"{item_id}-{k}", field: {
        "model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": f"{k} {item_id}"}]}}
        for k in range(3)]

@phase(2)
def merge(item_id, ask):
    with CALLS.open("a") as log:
        log.write(item_id + "\\n")
    return sorted(ask)
"""

KILLS = int(os.environ.get("KC_KILLS", "50"))


@pytest.mark.slow
@pytest.mark.parametrize("provider", [
    "openai",
    pytest.param("anthropic", marks=pytest.mark.skipif(
        os.environ.get("PIPEKIT_BATCH_CAMPAIGN") != "anthropic", reason="on demand: PIPEKIT_BATCH_CAMPAIGN=anthropic")),
])
def test_fifty_kills_submit_every_request_once_and_complete_every_item(
    provider: str, pipetester: PipeTester, request: pytest.FixtureRequest
) -> None:
    fake: FakeServer = request.getfixturevalue(f"{provider}_fake")
    module = pipetester.make_pipeline(PIPELINE.replace("{provider}", provider))
    items_file = module.with_name("items.txt")
    fake.configure(end_after_polls=3)
    command = [sys.executable, "-m", "pipekit", "run", str(module), "--state-dir", "state", "-p", "no:prices",
               "-q", "--progress", "none", "--wait", "--poll-interval", "0.05", "-j", "4"]
    rng = random.Random(int(os.environ.get("KC_SEED", "21")))
    ids: list[str] = []
    kills = 0
    while kills < KILLS and len(ids) < 400:
        # A round: 4 new items, run and killed at random moments until one run finishes by itself.
        ids += [f"i{len(ids) + n:03d}" for n in range(4)]
        items_file.write_text("\n".join(ids) + "\n")
        for _ in range(20):
            proc = subprocess.Popen(command, cwd=pipetester.path, env=os.environ.copy(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Start-up takes about 0.3 s and a round under a second: the kills land in
            # the handlers, the submission, the polls and the collection.
            time.sleep(rng.uniform(0.2, 1.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            if proc.wait() == 0:
                break
    final = pipetester.run_subprocess(str(module), "--state-dir", "state", "-p", "no:prices",
                                      "--wait", "--poll-interval", "0.05")
    assert final.ret == 0, final
    assert kills >= KILLS, kills

    submitted = fake.stats()["submitted"]
    assert sorted(submitted) == sorted(f"{i}-{k}" for i in ids for k in range(3))
    twice = {cid: n for cid, n in submitted.items() if n != 1}
    if provider == "anthropic":  # at least once in the window of an upload (docs/batches.md): say how often
        print(f"anthropic: {len(twice)} of {len(submitted)} requests sent more than once, {kills} kills")
    else:
        assert not twice, twice
    assert sorted(set((pipetester.path / "calls.log").read_text().split())) == ids
    for item_id in ids:
        state = final.state(item_id)
        assert state.is_done
        answers = state.phase_outputs[1]
        assert sorted(answers) == [f"{item_id}-{k}" for k in range(3)]
        usage = "prompt_tokens" if provider == "openai" else "input_tokens"
        assert state.phases[1].tokens_in == sum(a["usage"][usage] for a in answers.values())
