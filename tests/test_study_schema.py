"""The JSON Schema of study files: what `attnbench schema` prints, the shipped copy, and the header
line that points editors at it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attnbench.cli import main
from attnbench.registry import available_mechanisms, get_mechanism
from attnbench.study import json_schema

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "studies" / "study.schema.json"
REGENERATE = "attnbench schema -o studies/study.schema.json"
HEADER = "# yaml-language-server: $schema="
STUDY_FILES = sorted([*(ROOT / "studies").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")])


@pytest.fixture(scope="module")
def schema() -> dict:
    return json_schema()


def test_the_shipped_schema_is_current(tmp_path):
    # a fresh interpreter: plugins that other tests registered in this one are not in the schema
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, "-m", "attnbench.cli", "schema", "-o", str(out)], check=True, cwd=ROOT)
    schema = json.loads(out.read_text(encoding="utf-8"))
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    stale = sorted(
        k for k in {*shipped["$defs"], *schema["$defs"]} if shipped["$defs"].get(k) != schema["$defs"].get(k)
    )
    assert shipped == schema, (
        f"{SHIPPED.relative_to(ROOT)} is out of date (a study key or a mechanism's parameters changed; "
        f"definitions that differ: {stale}); regenerate it with: {REGENERATE}"
    )


def test_the_schema_covers_every_kind_and_says_what_each_key_is(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]}
    assert kinds == {"SweepFile", "ModelsFile", "AblationFile", "PeersFile"}
    for kind in kinds:
        props = schema["$defs"][kind]["properties"]
        assert {"name", "kind", "device", "threads", "seed", "point_timeout_s"} <= set(props)
        undocumented = [k for k, v in props.items() if not v.get("description")]
        assert not undocumented, f"{kind}: keys without a description: {undocumented}"
        assert schema["$defs"][kind]["additionalProperties"] is False
    sweep = schema["$defs"]["SweepFile"]
    assert set(sweep["required"]) == {"sweep", "mechanisms"}
    assert sweep["properties"]["point_timeout_s"]["default"] == 900.0
    assert schema["$defs"]["AblationFile"]["properties"]["point_timeout_s"]["default"] == 21600.0
    assert "default 1 on CPU" in sweep["properties"]["threads"]["description"]


def test_each_registered_mechanism_has_its_parameters(schema):
    defs = schema["$defs"]
    for name in available_mechanisms():
        params = defs[f"{name}_params"]
        declared = get_mechanism(name).hyperparameters()
        assert list(params["properties"]) == list(declared), name
        assert params["additionalProperties"] is False
        for p in declared.values():
            prop = params["properties"][p.name]
            assert prop.get("default") == p.default and prop["description"], (name, p.name)
    topk = defs["bra_params"]["properties"]["topk"]
    assert topk["anyOf"][0] == {"type": "integer"}  # one value, or a list that sweeps it
    assert topk["anyOf"][1]["items"] == {"type": "integer"} and "routed regions" in topk["description"]
    backend = defs["bra_params"]["properties"]["backend"]["anyOf"][0]
    assert backend["enum"] == list(get_mechanism("bra").hyperparameters()["backend"].choices)
    entry = defs["bra_entry"]
    assert entry["properties"]["name"]["const"] == "bra" and entry["properties"]["params"]["anyOf"][0] == {
        "$ref": "#/$defs/bra_params"
    }


def test_shipped_studies_validate_against_it_and_mistakes_do_not(schema):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in STUDY_FILES:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))]
        assert not errors, f"{path.relative_to(ROOT)}: {errors}"
    study = yaml.safe_load((ROOT / "studies" / "complexity.yaml").read_text(encoding="utf-8"))
    for mistake in (
        {"repeats": 0},
        {"dtype": "fp32"},
        {"point_timeout_s": -1},
        {"mechanisms": [{"name": "bra", "params": {"topkk": 4}}]},
        {"mechanisms": [{"name": "bra", "params": {"backend": "fast"}}]},
        {"mechanisms": [{"name": "bra", "params": {"n_win": "seven"}}]},
        {"sweep": {"resolution": [28], "dim": [64]}},
    ):
        assert not validator.is_valid({**study, **mistake}), mistake
    assert validator.is_valid({**study, "mechanisms": ["my_plugin_attention"]})  # a plugin's, by name


def test_every_study_file_starts_with_the_schema_header():
    assert STUDY_FILES
    for path in STUDY_FILES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(HEADER), f"{path.relative_to(ROOT)}: the first line is not the schema header"
        target = (path.parent / first[len(HEADER) :]).resolve()
        assert target == SHIPPED, f"{path.relative_to(ROOT)}: the header points at {target}"


def test_attnbench_schema_prints_or_writes_it(tmp_path, capsys, schema):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    out = tmp_path / "study.schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == schema
    assert main(["schema", "-o", str(tmp_path / "missing" / "x.json")]) == 2
    assert "cannot write" in capsys.readouterr().err
