"""TFDS builders (array_record, no TensorFlow needed) for every data set in `splits.DATASETS`.

One generic `LcfData` builder, one builder config per data set; examples come from `sources.py`
reading the manual dir (the raw data dir), splits are the ones `splits.py` gives the set, and the
examples keep file order (`disable_shuffling=True`).

    build("squad", data_dir, cache_dir)            # once; a second call reuses the files
    ds = load("squad", "dev", data_dir, cache_dir)  # random access: len(ds), ds[i] -> dict of str

Config names are the data set names with "/" replaced by "-" (e.g. "qa_train-drop"); a build
with `max_examples=N` (N per split, for tests) or with non-default source options gets its own
config name, so it never shadows the full build in the same cache dir.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from lcf_jax.data import sources
from lcf_jax.data import splits as splits_lib
from lcf_jax.fileio import exclusive

VERSION = "1.0.0"
# Sets whose reader changed what it yields: a new version, so that a cache built by the old reader is not read.
SET_VERSIONS = {
    "instruct/t0": ("1.1.0", "Leaves out templates built on evaluated sets (splits.EVALUATED_T0_SOURCES)."),
}
DEFAULT_CACHE_DIR = sources.REPO_ROOT / ".cache" / "tfds"


class EmptySplitError(ValueError):
    pass


def _features(kind: str) -> tfds.features.FeaturesDict:
    text = tfds.features.Text
    if kind == "qa":
        return tfds.features.FeaturesDict({
            "id": text(),
            "sharer_context": text(),
            "question": text(),
            "answers": tfds.features.Sequence(text()),
            "target": text(),
        })
    if kind == "mc":
        return tfds.features.FeaturesDict({
            "id": text(),
            "question": text(),
            "choices": tfds.features.Sequence(text()),
            "gold": tfds.features.Scalar(np.int32),
            "subject": text(),
        })
    return tfds.features.FeaturesDict({"id": text(), "prompt": text(), "completion": text()})


def config_name(name: str, max_examples: Optional[int] = None, **options) -> str:
    splits_lib.rule_for(name)
    out = name.replace("/", "-")
    for key in sorted(options):
        out += f"-{key}_{options[key]}"
    if max_examples is not None:
        out += f"-max{int(max_examples)}"
    return out


class LcfDataConfig(tfds.core.BuilderConfig):
    """Which data set (`set_name`), how many examples per split, and the source options."""

    def __init__(self, *, set_name: str, max_examples: Optional[int] = None,
                 options: Optional[dict] = None, **kwargs):
        options = dict(options or {})
        kwargs.setdefault("name", config_name(set_name, max_examples, **options))
        version, notes = SET_VERSIONS.get(set_name, (VERSION, "Initial release."))
        kwargs.setdefault("version", version)
        kwargs.setdefault("release_notes", {version: notes})
        kwargs.setdefault("description", f"lcf_jax data set {set_name}")
        super().__init__(**kwargs)
        self.set_name = set_name
        self.max_examples = max_examples
        self.options = options


class LcfData(tfds.core.GeneratorBasedBuilder):
    """Latent Cache Flow data sets read from the shared raw data dir (the manual dir)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {VERSION: "Initial release."}
    BUILDER_CONFIGS = [LcfDataConfig(set_name=n) for n in splits_lib.DATASETS]
    # TFDS looks for a checksums file next to the builder's code via `code_path`, which, for a
    # builder inside a package, touches `importlib_resources` (not installed: TFDS 4.9.10 lists it
    # only as an optional extra). Nothing is downloaded, so there is no checksums file to find.
    code_path = None
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the shared raw data dir (default ../shared/data from the repository root) as "
        "download_config=tfds.download.DownloadConfig(manual_dir=data_dir)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        name = self.builder_config.set_name
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{name} ({splits_lib.kind_of(name)}), splits {splits_lib.available_splits(name)}",
            features=_features(splits_lib.kind_of(name)),
            disable_shuffling=True,  # keep file order
        )

    def _split_generators(self, dl_manager):
        data_dir = pathlib.Path(dl_manager.manual_dir)
        name = self.builder_config.set_name
        sources.path_of(name, data_dir)  # fail early with the data_dir message
        return {split: self._generate_examples(data_dir, split)
                for split in splits_lib.available_splits(name)}

    def _generate_examples(self, data_dir, split):
        cfg = self.builder_config
        stats: dict = {}
        examples = sources.iter_examples(cfg.set_name, split, data_dir, stats, **cfg.options)
        n = 0
        for ex in examples:
            if cfg.max_examples is not None and n >= cfg.max_examples:
                break
            yield f"{n:08d}", ex
            n += 1
        if n == 0:  # TFDS cannot write an empty split; say why it is empty
            raise EmptySplitError(
                f"{cfg.set_name!r} split {split!r} has no examples left (reader counts: {stats})"
                + (". Disfl-QA's passages are all SQuAD v1.1 dev paragraphs; pass "
                   "squad_overlap='keep' only for models never evaluated on SQuAD"
                   if cfg.set_name == "qa_train/disfl_qa" else "")
            )


def _builder(name: str, cache_dir, max_examples, options) -> LcfData:
    cfg = LcfDataConfig(set_name=name, max_examples=max_examples, options=options)
    if cfg.name in LcfData.builder_configs:  # a predefined config must be named, not re-made
        cfg = cfg.name
    if cache_dir is None:
        cache_dir = os.environ.get("TFDS_DATA_DIR") or DEFAULT_CACHE_DIR
    cache_dir = pathlib.Path(cache_dir)
    return LcfData(config=cfg, data_dir=os.fspath(cache_dir))


def build(name: str, data_dir=None, cache_dir=None, max_examples: Optional[int] = None,
          **options) -> LcfData:
    """Build `name` into `cache_dir` once (array_record); later calls reuse it. Returns the builder.

    `data_dir` is the raw data dir (None: see `sources.resolve_data_dir`); `cache_dir` defaults to
    $TFDS_DATA_DIR, else `<repo>/.cache/tfds`. `max_examples` keeps the first N examples of each split (for tests).
    """
    builder = _builder(name, cache_dir, max_examples, options)
    if not is_built(builder):
        raw = sources.resolve_data_dir(data_dir)
        sources.path_of(name, raw)
        built = pathlib.Path(builder.data_dir)
        with exclusive(built.with_name(f".{built.name}.lock")):  # another process may be building it
            if not is_built(builder):
                builder.download_and_prepare(
                    file_format="array_record",
                    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(raw)),
                )
    return builder


def is_built(builder: LcfData) -> bool:
    return (pathlib.Path(builder.data_dir) / "dataset_info.json").exists()


def _to_python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value.tolist()] if value.ndim else _to_python(value.item())
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    return value


class DecodedSource(Sequence):
    """Random-access view of a TFDS data source whose records are dicts of Python values."""

    def __init__(self, source, name: str, split: str):
        self._source = source
        self.name = name
        self.split = split

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {self.name}/{self.split} ({n})")
        return _to_python(self._source[index])

    def __getitems__(self, indices) -> list[dict]:
        return [self[int(i)] for i in indices]

    def __repr__(self) -> str:
        return f"DecodedSource({self.name!r}, {self.split!r}, n={len(self)})"


def load(name: str, split: str, data_dir=None, cache_dir=None,
         max_examples: Optional[int] = None, **options) -> DecodedSource:
    """Build if needed, then return random-access examples of `split` (Python str values)."""
    splits_lib.check_split(name, split)
    builder = build(name, data_dir, cache_dir, max_examples, **options)
    return DecodedSource(builder.as_data_source(split=split), name, split)
