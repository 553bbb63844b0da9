"""--top-k, --top-p, --min-p and --repeat-penalty really change what is sampled.

At temperature 1 with a fixed seed the output is deterministic, so over several seeds:
the same values give the same text, a changed value gives a different text, and a value
that leaves only the most likely token (top-k 1, top-p 0, min-p 1) gives exactly the
greedy (temperature 0) text, whatever the seed. That last one is an oracle that does
not depend on the sampler's code: it is what the parameters mean.
"""

from __future__ import annotations

import json

import pytest

from localassist.engine.types import SamplingParams

pytestmark = pytest.mark.model

PROMPT = "Once upon a time"


def complete(backend, prompt: str, params) -> str:
    from localassist.engine.types import ChatRequest

    return backend.chat(ChatRequest(prompt=prompt, sampling=params)).result().text


SEEDS = (1, 2, 3)
N = 24
# a moderate change of each parameter (from the defaults top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1)
CHANGED = {"top_k": 3, "top_p": 0.5, "min_p": 0.2, "repeat_penalty": 1.5}
# values that leave only the most likely token
GREEDY_EQUIVALENT = {"top_k": 1, "top_p": 0.0, "min_p": 1.0}


def sample(backend, **params) -> str:
    params = {"temperature": 1.0, "max_tokens": N, **params}
    return complete(backend, PROMPT, SamplingParams(**params))


@pytest.fixture(scope="module")
def reference(backend):
    """Default parameters per seed, and the greedy text. A first run evaluates the whole
    prompt; later ones reuse the KV cache: warm up so every compared run starts alike."""
    sample(backend, temperature=0)
    greedy = sample(backend, temperature=0)
    by_seed = {seed: sample(backend, seed=seed) for seed in SEEDS}
    return greedy, by_seed


def test_same_values_and_seed_repeat_exactly(backend, reference):
    greedy, by_seed = reference
    assert sample(backend, temperature=0) == greedy
    for seed in SEEDS:
        assert sample(backend, seed=seed) == by_seed[seed]
    assert len(set(by_seed.values())) == len(SEEDS)  # and the seed matters at temperature 1
    assert greedy not in by_seed.values()


@pytest.mark.parametrize("name", list(CHANGED))
def test_a_changed_value_changes_the_sampled_text(backend, reference, name):
    _, by_seed = reference
    changed = {seed: sample(backend, seed=seed, **{name: CHANGED[name]}) for seed in SEEDS}
    for seed in SEEDS:
        assert changed[seed] != by_seed[seed], (name, seed)
    assert sample(backend, seed=SEEDS[0], **{name: CHANGED[name]}) == changed[SEEDS[0]]  # and it repeats


@pytest.mark.parametrize("name", list(GREEDY_EQUIVALENT))
def test_keeping_only_the_top_token_is_greedy(backend, reference, name):
    greedy, _ = reference
    for seed in SEEDS:
        assert sample(backend, seed=seed, **{name: GREEDY_EQUIVALENT[name]}) == greedy, (name, seed)


def test_repeat_penalty_lowers_repetition(backend, reference):
    """Greedy counting repeats ", " after every number; a strong penalty must break that."""
    counting = "1, 2, 3, 4, 5, 6, 7, 8,"
    plain = complete(backend, counting, SamplingParams(temperature=0, max_tokens=N))
    penalized = complete(backend, counting, SamplingParams(temperature=0, max_tokens=N, repeat_penalty=2.0))
    assert plain.count(",") > penalized.count(",")


# --- the flags reach the sampler (the real CLI)


def cli_text(cli, env, *args: str) -> str:
    result = cli("ask", "--raw", PROMPT, "-n", str(N), "--json", "--no-log", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["text"]


def test_sampling_flags_reach_the_sampler(cli, model_env):
    greedy = cli_text(cli, model_env, "-T", "0")
    hot = ["-T", "1", "--seed", "5"]
    assert cli_text(cli, model_env, *hot) != greedy
    for flag, value in (("--top-k", "1"), ("--top-p", "0"), ("--min-p", "1")):
        assert cli_text(cli, model_env, *hot, flag, value) == greedy, flag
    assert cli_text(cli, model_env, "-T", "0", "--repeat-penalty", "2") != greedy
