"""Render the configuration reference (README) from the schemas, so the docs cannot drift from the code.

`python -m seqtrain.config_doc` prints it; `--write README.md` replaces the part between the markers.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing

from omegaconf import MISSING

from seqtrain import config

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _type_name(tp) -> str:
    text = str(tp) if not isinstance(tp, type) else tp.__name__
    text = re.sub(r"typing\.|seqtrain\.config\.", "", text)
    return text.replace("NoneType", "None")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = MISSING
    if value == MISSING:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return f"`{value!r}`".replace("|", "\\|")


def table(schema: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(schema, vars(config))
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(schema):
        bounds = config.range_text(f)
        help_text = (f.metadata.get("help", "") + (f" ({bounds})" if bounds else "")).replace("|", "\\|")
        type_name = _type_name(hints[f.name]).replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {type_name} | {_default(f)} | {help_text} |")
    return rows


def registry_tables(title: str, registry, prefix: str) -> list[str]:
    lines = [f"### {title}", ""]
    for name in registry.names():
        _, schema = registry.get(name, "")
        lines += [f"`{name}`", "", *table(schema, prefix), ""]
    return lines


def render() -> str:
    from seqtrain.datasets import DATASETS
    from seqtrain.layers import LAYERS

    sections = [
        ("engine", config.EngineConfig),
        ("batching", config.BatchingConfig),
        ("task", config.TaskConfig),
        ("optimizer (adam)", config.AdamConfig),
        ("optimizer (adamw)", config.AdamWConfig),
        ("optimizer (sgd)", config.SGDConfig),
        ("lr_control", config.LRControlConfig),
        ("network", config.NetworkConfig),
        ("dataset", config.DatasetsConfig),
    ]
    extra = [
        (name, getattr(config, cls))
        for name, cls in (("pretrain", "PretrainConfig"), ("cleanup", "CleanupConfig"))
        if hasattr(config, cls)
    ]
    lines = [START, "", *table(config.Config, ""), ""]
    for title, schema in sections + extra:
        prefix = title.split(" ")[0] + "."
        lines += [f"### {title}", "", *table(schema, prefix), ""]
    lines += registry_tables("dataset classes (`dataset.train.class: NAME`)", DATASETS, "")
    lines += registry_tables("layer classes (`network.layers.NAME.class`)", LAYERS, "")
    return "\n".join([*lines, END])


def write(path: str) -> None:
    text = open(path).read()
    start, end = text.index(START), text.index(END) + len(END)
    with open(path, "w") as f:
        f.write(text[:start] + render() + text[end:])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write(sys.argv[2])
    else:
        print(render())
