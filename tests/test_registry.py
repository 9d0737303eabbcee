"""The registry: lazy targets, "did you mean", and every catalog entry resolving."""

from __future__ import annotations

import subprocess
import sys

import pytest

from owsbench.catalog import DATASETS, METHODS, METRICS, SEGMENTERS, SUPERVISIONS
from owsbench.errors import BadInput
from owsbench.registry import Registry


def test_targets_are_imported_only_on_get():
    code = (
        "import sys\n"
        "from owsbench.registry import Registry\n"
        "r = Registry('thing')\n"
        "r.register('lazy', 'fractions:Fraction')\n"
        "assert 'fractions' not in sys.modules, 'imported at registration'\n"
        "assert r.get('lazy').__name__ == 'Fraction'\n"
        "assert 'fractions' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_id_suggests_close_ids():
    registry = Registry("method")
    for name in ("maxlogit", "msp", "sml"):
        registry.register(name, f"mod:{name}")
    with pytest.raises(BadInput, match=r"unknown method 'maxlogits'; did you mean maxlogit\?"):
        registry.get("maxlogits")
    with pytest.raises(BadInput, match="valid: maxlogit, msp, sml"):
        registry.get("zzzzzz")


def test_duplicate_and_malformed_registrations_are_refused():
    registry = Registry("method")
    registry.register("a", "mod:A")
    with pytest.raises(ValueError):
        registry.register("a", "mod:B")
    with pytest.raises(ValueError):
        registry.register("b", "no_colon")


@pytest.mark.parametrize("method_id", METHODS.ids())
def test_every_method_resolves_to_a_class_with_its_id(method_id):
    cls = METHODS.get(method_id)
    assert cls.name == method_id
    assert cls.summary


@pytest.mark.parametrize(
    "registry", [DATASETS, SEGMENTERS, SUPERVISIONS, METRICS], ids=lambda r: r.kind
)
def test_every_entry_resolves(registry):
    for entry in registry:
        assert registry.get(entry.id) is not None
    for dataset_id in DATASETS.ids():
        assert DATASETS.get(dataset_id).name == dataset_id


def test_an_imported_object_can_be_registered_and_removed():
    registry = Registry("thing")
    registry.register_object("ours", Registry, "a class registered as it is")
    assert registry.get("ours") is Registry
    assert registry.entry("ours").target == "owsbench.registry:Registry"
    registry.unregister("ours")
    assert "ours" not in registry
