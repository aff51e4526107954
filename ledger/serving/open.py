"""Opening what serves: the artifact a pointer names, checked before it answers queries."""

from __future__ import annotations

from pathlib import Path

from ledger.artifacts.index_reader import IndexReader, open_artifact
from ledger.artifacts.manifest import MANIFEST, load_manifest, sha256_file
from ledger.errors import ArtifactError, ServingError
from ledger.serving.pointers import ServingPointer, current, refuse_corrupt


def open_index(home: Path | str, model: str, *, verify: bool = True) -> IndexReader:
    """Open the index serving ``model``, refusing one that is not what the pointer names.

    Refused (:class:`ServingError`): no pointer; a manifest of another model or version; a
    manifest whose checksum is not the one pinned at switch time; with ``verify``, files
    that do not match their checksums.

    Example:
        >>> with open_index(".ledger", "embedder") as index:  # doctest: +SKIP
        ...     index.query(vector, 10)
    """
    pointer = current(home, model)
    if pointer is None:
        raise ServingError(f"model {model!r} has no serving pointer; run a rollback or switch")
    folder = check_pointer(home, pointer, verify=verify)
    try:
        reader = open_artifact(folder)
    except ArtifactError as exc:
        raise ServingError(f"cannot open the serving artifact of {model!r}: {exc}") from exc
    reader.search_k = serving_search_k(pointer)
    return reader


def check_pointer(home: Path | str, pointer: ServingPointer, *, verify: bool = True) -> Path:
    """The artifact folder ``pointer`` names, after checking it may serve: its manifest is
    of the pointer's model and version, with the checksum pinned at switch time, and (with
    ``verify``) its files match their checksums. Otherwise :class:`ServingError`.
    """
    folder = pointer.artifact_path(home)
    model = pointer.model
    if pointer.manifest_sha256 and sha256_file(folder / MANIFEST) != pointer.manifest_sha256:
        raise ServingError(
            f"the manifest of the serving artifact {folder} changed since the switch (the "
            "file was edited); refusing to serve it"
        )
    try:
        manifest = load_manifest(folder)
    except ArtifactError as exc:
        raise ServingError(f"the serving artifact of {model!r} is unreadable: {exc}") from exc
    if (manifest.model, manifest.version) != (pointer.model, pointer.version):
        raise ServingError(
            f"the serving artifact {folder} is {manifest.model} {manifest.version}, but the "
            f"pointer says {pointer.model} {pointer.version}; refusing to serve it"
        )
    if manifest.checksum != pointer.checksum:
        raise ServingError(
            f"the serving artifact {folder} changed since the switch (manifest checksum "
            f"{manifest.checksum[:12]}, pinned {pointer.checksum[:12]}); refusing to serve it"
        )
    if verify:
        refuse_corrupt(folder)
    return folder


def serving_search_k(pointer: ServingPointer) -> int:
    """The Annoy ``search_k`` serving uses for ``pointer``'s index: the one the rollback
    calibrated to meet the recall threshold (-1, Annoy's default, if none was recorded)."""
    value = pointer.info.get("search_k", -1)
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else -1
