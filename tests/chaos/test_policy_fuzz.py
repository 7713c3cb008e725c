"""The policy fuzzer: 10,000 seeded mutations of the shipped policies, none may crash anything.

Issue 14's chaos suite. Every mutant goes through the loader (``load_file``) and through
``rollwise policy validate`` (click's CliRunner, ten files an invocation); a sample goes
through the real CLI as a subprocess and through the controller's ``PolicyStore.reload``.
Every policy that loads is then driven through the pure core (``tests.policy.drive``:
the state machine on every path, the judge at every step, the PromQL builder) at a
far-future ``now``. Asserted: no exception but PolicyError, every problem one printable
located line, no "internal error" problem (a bug of ours caught by the loader's last
resort), no traceback in any output, exit codes 0/1 that match what loaded.

Mutations (seeded, so a failure names the seed and index that reproduce it):
structure-aware ones on the parsed policy (delete, duplicate, retype or add keys,
extreme values, swap lists and maps, graft known sub-structures with extreme values),
then YAML features injected into the text (anchors, aliases, alias bombs, merge keys,
tags, duplicate keys, multi-document, directives, deep nesting, BOM, CRLF, tabs), then
byte-level ones (flips, insertions, deletions, splices, invalid UTF-8, NULs). Bounded:
a fixed count, about 30 s of CPU; the figures are printed (run with -s to see them in
full; ROLLWISE_FUZZ_SEED and ROLLWISE_FUZZ_MUTATIONS change the run).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from controller.cli import main
from controller.policy import PolicyError, load_file
from controller.policy.loader import known_fields, policy_files
from controller.policystore import PolicyStore
from tests.policy.drive import FAR_FUTURE, Judged, exercise

pytestmark = pytest.mark.chaos

SEED = int(os.environ.get("ROLLWISE_FUZZ_SEED", "14"))
MUTATIONS = int(os.environ.get("ROLLWISE_FUZZ_MUTATIONS", "10000"))
CLI_BATCH = 10                    # mutants per in-process `rollwise policy validate`
SUBPROCESS_SAMPLE = 150           # mutants validated by the real CLI, in one process
STORE_EVERY = 25                  # every n-th mutant also goes through PolicyStore.reload
ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
PROBLEM_LINE = re.compile(r"^(?P<file>.+?):(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*): ")

# --- values and structures ----------------------------------------------------------------

EXTREME: list[Any] = [
    0, -1, 1, 100, 101, 2**31, 2**63, 2**64, -(2**63), 10**100, 10**101,
    0.0, -0.0, 1e-320, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 0.5, 1.0,
    True, False, None, "", " ", "\t", "x" * 5000, "\u202e\u0000\x1b[31m", "é" * 100,
    "99999999999h", "999999999d", "30d", "30d1ms", "1h", "0s", "0ms", "-5m", "1.5h", "5",
    "1" + "0" * 400 + "s", "PT5M", "ratio", "latency", "distribution", "training", "stable",
    "psi", "jensenShannon", "rollback", "remind", "pause", "never", "everyStep",
    "knative-otel", "istio", "kserve-model-server", "#ml", "C0123ABCD", "U012AB3CD", "sre",
    "system:serviceaccount:ci:deployer", 'x{r=~"${revision}"}', "${window}", "$$", "${ns}",
    "../../etc/passwd", "/etc/passwd", "ref\x00.yaml", "reference-histograms",
    "reference-histograms/churn-predictions.yaml", [], {}, [1, 2], {"a": 1}, [[[]]],
]
# Extremes of the same kind as the value they replace, so that they reach its field.
SAME_KIND: dict[str, list[Any]] = {
    "duration": ["99999999999h", "999999999d", "30d", "30d1ms", "720h", "2592000000ms",
                 "0s", "0ms", "1ms", "1" + "0" * 400 + "s", "-1s", "1h30", "9" * 20 + "d"],
    "int": [0, -1, 1, 2**31, 2**63, 10**9, 10**9 + 1, 10**18, 10**100, -(10**100)],
    "float": [0.0, -0.0, 5e-324, 1e-300, 1e308, float("inf"), float("-inf"), float("nan"),
              0.999999999, 1.0, 10.0, 10.000001],
    "str": ["", "x" * 5000, "\u202e", "a b", "UPPER", "${revision}", "-", "a" * 64],
}
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")


def _kind(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, str):
        return "duration" if _DURATION.match(value) else "str"
    return "int" if isinstance(value, int) else "float"


GRAFTS: list[dict[str, Any]] = [
    {"pause": {"approval": {"timeout": "30d", "onTimeout": "remind", "remindEvery": "30d"}}},
    {"pause": {"approval": {"timeout": "1ms", "onTimeout": "rollback"}}},
    {"pause": {"duration": "30d"}},
    {"minDuration": "30d", "minRequests": 1_000_000_000},
    {"minDuration": "0s", "minRequests": 0},
    {"readyTimeout": "30d"}, {"readyTimeout": "1ms"},
    {"onInconclusive": {"deadline": "30d", "action": "rollback"}},
    {"onMissingData": {"after": "1ms", "action": "rollback"}},
    {"interval": "1ms"}, {"interval": "30d"}, {"alpha": 0.5}, {"alpha": 1e-300},
    {"certify": "everyStep"}, {"certify": "never"},
    {"gates": {"preRollout": {"metrics": [{"name": "auc", "min": -1e308, "max": 1e308}]}}},
    {"approvers": {"kubernetesUsers": ["a" * 512], "kubernetesGroups": ["sre", "ops"],
                   "slackUsers": ["U0"], "slackUserGroups": ["S0"]}},
    {"kind": "latency", "name": "slow", "threshold": "1h", "maxShareAbove": 0.999999},
    {"kind": "latency", "name": "p", "quantile": 1e-9, "maxLatency": "1ms", "tolerance": 10},
    {"kind": "ratio", "name": "e", "maxRate": 1e-300, "tolerance": 0,
     "query": {"errors": 'e{r=~"${revision}"}', "total": 't{r=~"${revision}"}[${window}]'}},
    {"kind": "distribution", "name": "d", "method": "psi", "threshold": 10,
     "reference": {"source": "training",
                   "histogram": {"bounds": [-1e15, 0, 1e15], "counts": [1e15, 0, 1e15, 1e15]}}},
    {"kind": "distribution", "name": "js", "method": "jensenShannon", "threshold": 1,
     "reference": {"source": "training", "file": "reference-histograms/churn-predictions.yaml"}},
    {"kind": "distribution", "name": "q", "metric": "m",
     "query": {"buckets": 'b{r=~"${revision}"}', "unit": "milliseconds", "revisionLabel": "r"}},
]


def _steps(rng: random.Random) -> list[dict[str, Any]]:
    """A valid ladder of weights, sometimes long."""
    count = rng.choice([1, 2, 3, 10, 50, 99])
    weights = [*sorted(rng.sample(range(1, 100), count - 1)), 100]
    return [{"weight": w} for w in weights]


# --- structure-aware mutations -------------------------------------------------------------


def _containers(tree: Any) -> list[dict[str, Any] | list[Any]]:
    """Every mapping and list in ``tree``, once each (mutations may make it cyclic)."""
    out: list[dict[str, Any] | list[Any]] = []
    seen: set[int] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict | list) and id(node) not in seen:
            seen.add(id(node))
            out.append(node)
            pending.extend(node.values() if isinstance(node, dict) else node)
    return out


def _random_value(rng: random.Random, tree: Any) -> Any:
    roll = rng.random()
    if roll < 0.6:
        return _deepcopy(rng.choice(EXTREME))
    if roll < 0.8:
        return _deepcopy(rng.choice(GRAFTS))
    if roll < 0.9:
        return _steps(rng)
    candidates = _containers(tree)
    return rng.choice(candidates) if candidates else None


def mutate_tree(tree: Any, rng: random.Random) -> Any:
    """One structure-aware change somewhere in ``tree`` (changed in place when possible)."""
    containers = _containers(tree)
    if not containers:
        return _random_value(rng, tree)
    node = rng.choice(containers)
    op = rng.randrange(8)
    if op == 7:                                                  # an extreme of its kind
        leaves = [(c, k) for c in containers for k in (c if isinstance(c, dict)
                                                         else range(len(c)))
                  if _kind(c[k]) is not None]
        if leaves:
            parent, key = rng.choice(leaves)
            parent[key] = rng.choice(SAME_KIND[_kind(parent[key]) or "str"])
        return tree
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        if op == 0:
            del node[key]                                        # delete a key
        elif op == 1:
            node[key] = _random_value(rng, tree)                 # replace with an extreme
        elif op == 2:
            node[rng.choice(sorted(known_fields()))] = _random_value(rng, tree)   # add
        elif op == 3:
            value = node[key]                                    # swap list and map
            node[key] = (list(value.values()) if isinstance(value, dict) else
                         {str(i): v for i, v in enumerate(value)} if isinstance(value, list)
                         else [value])
        elif op == 4:
            node.update(_deepcopy(rng.choice(GRAFTS)))           # graft a known piece
        elif op == 5:
            node[key + rng.choice(["", "s", "X", "\n", " "])] = node.pop(key)   # rename
        else:
            node[key] = str(node[key]) if not isinstance(node[key], str) else (
                rng.choice([1, 1.5, True, None]))                # retype
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        if op == 0:
            del node[i]
        elif op == 1:
            node[i] = _random_value(rng, tree)
        elif op == 2:
            node.insert(i, node[i])                              # duplicate an item
        elif op == 3:
            node.extend(node[:rng.randrange(1, 4)] * rng.choice([1, 30]))
        elif op == 4 and isinstance(node[i], dict):
            node[i].update(_deepcopy(rng.choice(GRAFTS)))
        else:
            rng.shuffle(node)
    return tree


def dump(tree: Any) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    try:
        return yaml.dump(tree, Dumper=dumper, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:          # e.g. a key that safe_dump cannot represent
        return yaml.dump(str(tree), Dumper=dumper)


# --- YAML features injected into the text -------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True) or ["\n"]


def _key_line(rng: random.Random, lines: list[str]) -> int:
    keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[-\w]+:", line)]
    return rng.choice(keyed) if keyed else 0


def inject_yaml(text: str, rng: random.Random, others: list[str]) -> str:
    lines = _lines(text)
    i = _key_line(rng, lines)
    line = lines[i]
    indent = " " * (len(line) - len(line.lstrip(" -")))
    before, after = "".join(lines[:i]), "".join(lines[i + 1:])
    features: list[Callable[[], str]] = [
        lambda: before + line + line + after,                                   # duplicate key
        lambda: before + line.replace(": ", ": &a ", 1) + indent + "again: *a\n" + after,
        lambda: "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + text,       # alias bomb
        lambda: text.replace("spec:\n", "base: &b {minDuration: 30d}\nspec:\n  <<: *b\n", 1),
        lambda: text.replace(": ", ": " + rng.choice(
            ["!!binary ", "!!python/object:os.system ", "!custom ", "!!set ", "!!timestamp ",
             "!!float ", "!!int ", "!!str ", "!!null ", "!<tag:x> ", "!!merge "]), 1),
        lambda: text + "\n---\n" + rng.choice([*others, "", "...\n", "- a\n", "x"]),
        lambda: rng.choice(["%YAML 1.1\n---\n", "%TAG ! tag:x:\n---\n", "--- |\n", "---\n"])
        + text,
        lambda: before + indent + "x: " + "[" * 70 + "]" * 70 + "\n" + line + after,   # deep
        lambda: "\ufeff" + text,
        lambda: text.replace("\n", "\r\n"),
        lambda: text.replace("  ", "\t", 1),
        lambda: before + indent + "? [a, b]\n" + indent + ": c\n" + line + after,  # complex
        lambda: "# only a comment\n" if rng.random() < 0.5 else "",
        lambda: text.replace(": ", ': "\\u0000\\x1b\\N\\ud800"  # ', 1),
        lambda: text[:rng.randrange(len(text) + 1)],                            # truncated
    ]
    return rng.choice(features)()


# --- bytes ----------------------------------------------------------------------------------

GARBAGE = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x1b[2J", b"\r", b"\t", b"{", b"[",
           b"'", b'"', b"&", b"*", b"!", b"|", b">", b"%", b"@", b"`", b":", b"- ", b"#", b"\\"]


def mutate_bytes(raw: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(6)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)      # flip a bit
        elif op == 1:
            data[pos:pos] = rng.choice(GARBAGE) * rng.choice([1, 1, 3, 500])
        elif op == 2:
            del data[pos:pos + rng.randint(1, 64)]
        elif op == 3:
            length = rng.randint(1, 200)
            data[pos:pos] = data[pos:pos + length] * rng.choice([1, 2, 50])   # duplicate
        elif op == 4:
            other = rng.choice(others)
            start = rng.randrange(len(other))
            data[pos:pos] = other[start:start + rng.randint(1, 300)]           # splice
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def mutant(rng: random.Random, sources: list[str], trees: list[Any]) -> bytes:
    """One mutant: a shipped policy after structure, YAML and byte mutations."""
    pick = rng.randrange(len(sources))
    roll = rng.random()
    if roll < 0.55:
        tree = _deepcopy(trees[pick])
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
            tree = mutate_tree(tree, rng)
        text = dump(tree)
    else:
        text = sources[pick]
    if roll >= 0.55 or rng.random() < 0.15:
        text = inject_yaml(text, rng, sources)
    raw = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        raw = mutate_bytes(raw, rng, [s.encode() for s in sources])
    return raw


def _deepcopy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _deepcopy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deepcopy(v) for v in tree]
    return tree


# --- running them ---------------------------------------------------------------------------


@dataclass
class Tally:
    mutations: int = 0
    loaded: int = 0
    rejected: int = 0
    exercised: int = 0
    cli_runs: int = 0
    store_reloads: int = 0
    failures: list[str] = field(default_factory=list)
    judged: Judged = field(default_factory=set, repr=False)

    def fail(self, index: int, raw: bytes, what: str, err: BaseException | None = None) -> None:
        detail = "".join(traceback.format_exception(err)[-3:]) if err is not None else ""
        self.failures.append(f"mutant {index} (ROLLWISE_FUZZ_SEED={SEED}): {what}\n"
                             f"  input: {raw[:300]!r}\n{detail}")


def _check_problems(err: PolicyError, directory: Path) -> str | None:
    for problem in err.problems:
        text = str(problem)
        if problem.line < 1 or problem.column < 1 or not text.isprintable():
            return f"malformed problem {text!r}"
        if "internal error" in problem.message:
            return f"internal error reached the last resort: {text}"
        if not problem.file.startswith(str(directory)):
            return f"problem names a file outside the policy directory: {text!r}"
    return None


Names = list[str] | None          # the policies a mutant defined; None: it was rejected


def _load_and_use(index: int, raw: bytes, path: Path, tally: Tally) -> Names:
    """The loader and the pure core."""
    path.write_bytes(raw)
    try:
        loaded = load_file(path)
    except PolicyError as err:
        tally.rejected += 1
        bad = _check_problems(err, path.parent)
        if bad:
            tally.fail(index, raw, bad)
        return None
    except BaseException as err:  # anything else is the defect this fuzzer hunts
        tally.fail(index, raw, "the loader raised", err)
        return None
    tally.loaded += 1
    for policy in loaded:
        try:
            exercise(policy.policy, FAR_FUTURE, tally.judged)
            tally.exercised += 1
        except BaseException as err:
            tally.fail(index, raw, "a policy that loaded broke the pure core", err)
    return [p.name for p in loaded]


def _validate_batch(batch: list[tuple[int, bytes, Path, Names]], tally: Tally) -> None:
    """One in-process `rollwise policy validate` over the batch's files: exit 0 exactly
    when every file loaded and no policy name is defined twice, a problem line for every
    file that did not load, never a traceback."""
    result = CliRunner().invoke(main, ["policy", "validate", *(str(p) for _, _, p, _ in batch)])
    tally.cli_runs += 1
    first_index, first_raw = batch[0][0], batch[0][1]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tally.fail(first_index, first_raw, "rollwise policy validate raised", result.exception)
        return
    if "Traceback" in result.output:
        tally.fail(first_index, first_raw, f"traceback in the output: {result.output[-500:]}")
    names = [n for *_, defined in batch for n in (defined or [])]
    clean = all(defined is not None for *_, defined in batch) and len(set(names)) == len(names)
    if result.exit_code != (0 if clean else 1):
        tally.fail(first_index, first_raw, f"exit code {result.exit_code}: {result.output}")
    for index, raw, path, defined in batch:
        if defined is None and f"{path}:" not in result.output:
            tally.fail(index, raw, "an invalid file got no problem line")


def _real_cli(directory: Path, tally: Tally) -> None:
    run = subprocess.run([sys.executable, "-m", "controller", "policy", "validate",
                          str(directory)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=False)
    tally.cli_runs += 1
    output = run.stdout + run.stderr
    if run.returncode not in (0, 1) or "Traceback" in output:
        tally.failures.append(f"real CLI on {directory}: exit {run.returncode}\n{output[-2000:]}")
    for line in run.stderr.splitlines()[:-1]:
        if not PROBLEM_LINE.match(line):
            tally.failures.append(f"real CLI printed a line that is not a problem: {line!r}")


def test_ten_thousand_mutated_policies_crash_nothing(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sources = [p.read_text() for p in policy_files(POLICIES)]
    trees = [yaml.safe_load(s) for s in sources]
    work = tmp_path / "policies"
    shutil.copytree(POLICIES / "reference-histograms", work / "reference-histograms")
    sample_dir = tmp_path / "sample"
    shutil.copytree(POLICIES / "reference-histograms", sample_dir / "reference-histograms")
    store_dir = tmp_path / "store"
    shutil.copytree(POLICIES / "reference-histograms", store_dir / "reference-histograms")
    store = PolicyStore(store_dir)
    rng = random.Random(SEED)
    tally = Tally()
    started, cpu = time.monotonic(), time.process_time()
    batch: list[tuple[int, bytes, Path, Names]] = []
    sample_every = max(MUTATIONS // SUBPROCESS_SAMPLE, 1)
    for index in range(MUTATIONS):
        raw = mutant(rng, sources, trees)
        tally.mutations += 1
        path = work / f"m{index % CLI_BATCH}.yaml"
        defined = _load_and_use(index, raw, path, tally)
        batch.append((index, raw, path, defined))
        if len(batch) == CLI_BATCH:
            _validate_batch(batch, tally)
            batch = []
        if index % sample_every == 0:
            (sample_dir / f"m{index}.yaml").write_bytes(raw)
        if index % STORE_EVERY == 0:
            (store_dir / "policy.yaml").write_bytes(raw)
            try:
                reload = store.reload()
                tally.store_reloads += 1
            except BaseException as err:
                tally.fail(index, raw, "the controller's policy reload raised", err)
            else:
                if reload.changed and bool(reload.problems) != (defined is None):
                    tally.fail(index, raw, f"the store disagrees with the loader: {reload}")
    if batch:
        _validate_batch(batch, tally)
    _real_cli(sample_dir, tally)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    with capsys.disabled():
        print(f"\npolicy fuzz (seed {SEED}): {tally.mutations} mutations, {tally.loaded} loaded "
              f"({tally.exercised} policies driven through the core at {FAR_FUTURE:%Y-%m-%d}), "
              f"{tally.rejected} rejected with located problems, {tally.cli_runs} CLI runs "
              f"(1 real subprocess over {len(list(sample_dir.glob('*.yaml')))} files), "
              f"{tally.store_reloads} policy-store reloads, {len(tally.failures)} tracebacks "
              f"or unexpected exceptions; {elapsed:.1f} s ({cpu:.1f} s of CPU)")
    assert tally.mutations == MUTATIONS >= 10_000 or "ROLLWISE_FUZZ_MUTATIONS" in os.environ
    assert tally.loaded and tally.rejected, "the mutations must both keep and break policies"
    failures = tally.failures
    assert not failures, "\n".join(failures[:5])
