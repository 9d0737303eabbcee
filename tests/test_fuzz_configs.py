"""Fuzzed run configs: random types, out-of-range and non-finite values, unknown keys at every
level of a config file. Planning (``owsbench run --write-jobs``) must end with exit 2 and one
line, or succeed when the mutation happens to be legal; never a traceback, never a hang (each
case is bounded by an alarm).
"""

from __future__ import annotations

import copy
import math
import signal

import numpy as np
import pytest
import yaml

from owsbench.catalog import METHODS
from owsbench.cli import main
from owsbench.segmenters.base import SegmenterConfig

CASES = 120
ODD_VALUES = (
    "fast", -1, 0, -1e9, 1e12, math.nan, math.inf, True, None, [], [1, 2, 3], {"a": 1}, 2.5,
    "", "0,1", [[1]],
)  # fmt: skip
BASE = {
    "methods": "msp,sml",
    "datasets": "synthstreets",
    "seeds": "0",
    "preset": "quick",
    "segmenter": {"steps": 5},
    "method_configs": {"sml": {"boundary_width": 4}},
    "supervisions": ["full"],
    "annotation_costs": {"full": 30},
}


def _field_names(config_class: type) -> list[str]:
    return list(config_class.__dataclass_fields__)


def mutate(rng: np.random.Generator) -> dict:
    """One random mutation of ``BASE``: a value replaced by an odd one, or an unknown key, at
    the top level, in ``segmenter``, in a method's config or in ``annotation_costs``."""
    config = copy.deepcopy(BASE)
    value = ODD_VALUES[rng.integers(len(ODD_VALUES))]
    where = rng.integers(6)
    if where == 0:
        config[str(rng.choice(list(BASE)))] = value
    elif where == 1:
        config["segmenter"][str(rng.choice(_field_names(SegmenterConfig)))] = value
    elif where == 2:
        name = str(rng.choice(["msp", "sml"]))
        fields = _field_names(METHODS.get(name).Config) or ["unknown_field"]
        config["method_configs"][name] = {str(rng.choice(fields)): value}
    elif where == 3:
        config["annotation_costs"] = {str(rng.choice(["full", "points", "nope"])): value}
    elif where == 4:
        section = str(rng.choice(["segmenter", "method_configs", "dataset_options", "top"]))
        target = config if section == "top" else config.setdefault(section, {})
        target["no_such_key"] = value
    else:
        config["method_configs"] = {str(rng.choice(["msp", "no-such-method"])): value}
    return config


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A data root with synthstreets generated once (planning opens it for its fingerprint)."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "ok.yaml").write_text(yaml.safe_dump(BASE))
    code = plan(root, root / "ok.yaml")
    assert code == 0
    return root


def plan(root, config_file) -> int:
    """``owsbench run --write-jobs`` in-process; its exit status."""
    argv = [
        "run", "--config", str(config_file), "--write-jobs", str(root / "jobs"),
        "--data-root", str(root / "data"), "--cache-dir", str(root / "cache"), "--no-progress",
    ]  # fmt: skip
    try:
        main(argv)
    except SystemExit as end:
        return int(end.code or 0)
    return 0


def test_fuzzed_configs_exit_2_with_one_line_or_plan(roots, capsys):
    rng = np.random.default_rng(0)
    refused = 0
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(CASES):
            config = mutate(rng)
            path = roots / f"case{case}.yaml"
            path.write_text(yaml.safe_dump(config))
            capsys.readouterr()
            signal.alarm(60)
            try:
                code = plan(roots, path)
            except Hang:
                pytest.fail(f"planning hung on {config}")
            finally:
                signal.alarm(0)
            err = capsys.readouterr().err.strip().splitlines()
            assert code in (0, 2), (config, code, err)
            if code == 2:
                refused += 1
                assert len(err) == 1 and err[0].startswith("owsbench: error: "), (config, err)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert refused >= CASES // 2, f"only {refused} of {CASES} odd configs were refused"
