"""Files a user hands in are data, never code; files we write never follow a link out of their folder.

The one implementation, shared by every command (``gan_ignite.run_dir`` uses it for the run
directory, the metrics for their caches, ``--save-stats`` and ``--json``):

- :func:`require_regular_file`: a path is checked with ``os.stat`` before it is opened: a FIFO,
  a device or a directory named like a data file is refused instead of read (a FIFO would block).
- :func:`load_torch_file`: ``torch.load(weights_only=True)``: tensors, plain containers, numbers and
  strings, and only the few extra types of :data:`SAFE_GLOBALS` (the NumPy arrays of an RNG state
  in a checkpoint). A file whose pickle names anything else is refused without running it, with
  one paragraph naming the file and the types it asked for.
- :func:`check_npz`: every ``.npy`` member of an ``.npz`` is checked before NumPy reads it: no
  object arrays, and a header whose shape fits the bytes actually stored (a header claiming
  10^7 x 10^7 would otherwise allocate 728 TiB before failing).
- :func:`atomic_write` / :func:`append_bytes` / :func:`open_no_follow`: temporary files are created
  with ``O_EXCL | O_NOFOLLOW`` (mode 0666 less the umask, like every other file we write) and
  renamed over the target: a rename replaces a symbolic link itself, never its target. Files
  written in place (appended logs, the lock) are opened with ``O_NOFOLLOW``: a link there is
  refused (:class:`LinkRefused`) instead of written through.
- :func:`refuse_same_file` and :func:`require_writable_target`: outputs that are also inputs, and
  output paths that cannot be written, are refused before any work.

It imports nothing from the rest of gan_ignite (and torch / numpy only inside functions).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["LinkRefused", "SAFE_GLOBALS", "UnsafeFileError", "append_bytes", "atomic_write", "check_npz",
           "create_temporary", "load_torch_file", "open_no_follow", "refuse_same_file", "require_regular_file",
           "require_writable_target", "write_in_place"]

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NEW_FILE_MODE = 0o666  # less the umask: what open(..., "w") gives (mkstemp would give 0600)
NPY_HEADER_LIMIT = 1 << 16  # numpy itself refuses longer headers (max_header_size 10,000)


class UnsafeFileError(ValueError):
    """A file that cannot be read as plain data (a pickle asking for code, a FIFO, a bogus header)."""


class LinkRefused(OSError):
    """A symbolic link where a file is written in place: writing would change the file it points to."""


# ----------------------------------------------------------------------------- reading
def require_regular_file(path: str | os.PathLike, label: str, fix: str,
                         error: type[Exception] = UnsafeFileError) -> os.stat_result:
    """``os.stat`` of ``path`` (following links: reading through a link is harmless), which must be a
    regular file; otherwise ``error`` with "<label> '<path>' does not exist / is a FIFO ... <fix>"."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{label} '{path}' does not exist. {fix}") from None
    except OSError as failure:
        raise error(f"{label} '{path}' cannot be read ({failure.strerror or failure}). {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{label} '{path}' is {_file_kind(info.st_mode)}, not a regular file: it is not read (a FIFO or "
                    f"device would block or never end). {fix}")
    return info


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _numpy_globals() -> list[Any]:
    import numpy as np

    reconstruct = getattr(getattr(np, "_core", None), "multiarray", None)
    reconstruct = getattr(reconstruct, "_reconstruct", None) or np.core.multiarray._reconstruct
    dtypes = [type(np.dtype(code)) for code in ("?", "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q",
                                                 "e", "f", "d", "g", "F", "D")]
    return [reconstruct, np.ndarray, np.dtype, *dtypes]


def safe_globals() -> list[Any]:
    """What a checkpoint may hold besides tensors and plain data: NumPy arrays and dtypes (the RNG
    states that ignite's engine saves). ``numpy.ndarray`` reconstruction reads raw bytes; an object
    array's items go through the same restricted unpickler, so nothing here runs code from the file."""
    return _numpy_globals()


SAFE_GLOBALS = "numpy arrays and dtypes (RNG states)"


def load_torch_file(path: str | os.PathLike, label: str, fix: str,
                    error: type[Exception] = UnsafeFileError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with :func:`safe_globals` allowed. A
    missing, irregular, damaged or code-carrying file raises ``error`` as one paragraph naming it."""
    import pickle

    import torch

    path = Path(path)
    require_regular_file(path, label, fix, error)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as failure:
            raise error(f"{label} '{path}' is a damaged zip archive ({_first_line(failure)}). {fix}") from None
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as failure:
        asks_for = _unsafe_names(path, failure)
        if asks_for:
            raise error(f"{label} '{path}' holds Python objects other than tensors and plain data "
                        f"({asks_for}). Loading them would run code from the file, so it is "
                        f"refused: gan_ignite reads such files with torch.load(weights_only=True), allowing only "
                        f"{SAFE_GLOBALS}. Use a file written by gan_ignite or the network's original release; "
                        f"if you trust this one, re-save its tensors alone (a state dict). {fix}") from None
        raise error(f"{label} '{path}' cannot be read ({_pickle_problem(failure)}): it is damaged or not a file of "
                    f"this kind (nothing in it was run). {fix}") from None
    except Exception as failure:  # torch raises many types for damaged or foreign files
        raise error(f"{label} '{path}' cannot be read ({type(failure).__name__}: {_first_line(failure)}): it is "
                    f"damaged or not a file of this kind. {fix}") from None


def _unsafe_names(path: Path, failure: Exception) -> str:
    """'it asks for a.b, c.d' when the refused pickle names globals outside the allow-list, else ''
    (a damaged file, which the unpickler also refuses)."""
    import torch

    try:
        names = [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(path) if name]
    except Exception:  # a legacy (non-zip) or damaged file: the message names the first global, if any
        names = []
    text = str(failure)
    for marker in ("unsupported GLOBAL ", "Unsupported global: GLOBAL "):
        if marker in text and not names:
            names = [text.split(marker, 1)[1].split()[0]]
    if not names:
        return ""
    return "it asks for " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _pickle_problem(failure: Exception) -> str:
    """The WeightsUnpickler's reason without torch's advice to load with weights_only=False."""
    text = str(failure)
    for marker in ("WeightsUnpickler error:", "Unpickling error:"):
        if marker in text:
            reason = text.split(marker, 1)[1].strip().split("\n")[0].strip()
            if reason:
                return reason
    return _first_line(failure)[:200]


def check_npz(path: str | os.PathLike, label: str, fix: str, error: type[Exception] = UnsafeFileError,
              max_bytes: int | None = None) -> None:
    """An ``.npz`` that NumPy can read without surprises: a regular file, a sound zip, and every
    ``.npy`` member with a plain dtype (no objects) and a shape whose bytes are really stored (in
    total at most ``max_bytes``, default this machine's memory). Otherwise ``error``."""
    import numpy as np

    require_regular_file(path, label, fix, error)
    limit = max_bytes if max_bytes is not None else _physical_memory()
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(handle, max_header_size=NPY_HEADER_LIMIT)
                    header_bytes = handle.tell()
                name = member.filename[:-4]
                if dtype.hasobject:
                    raise error(f"{label} '{path}' stores '{name}' as Python objects (pickled), which are never "
                                f"loaded: only numeric arrays are read. {fix}")
                count = 1
                for size in shape:
                    count *= int(size)
                claimed = count * dtype.itemsize
                if claimed > member.file_size - header_bytes:
                    raise error(f"{label} '{path}': the header of '{name}' claims shape {tuple(shape)} "
                                f"({_format_bytes(claimed)}), but only {_format_bytes(member.file_size - header_bytes)}"
                                f" are stored: the file is damaged or forged and is not read. {fix}")
                total += claimed
                if limit is not None and total > limit:
                    raise error(f"{label} '{path}' would need {_format_bytes(total)} of memory, more than this "
                                f"machine has; it is not read. {fix}")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as failure:
        if isinstance(failure, error):
            raise
        raise error(f"Cannot read {label[:1].lower() + label[1:]} '{path}': it is not a readable .npz archive "
                    f"({type(failure).__name__}: {_first_line(failure)}). {fix}") from None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _format_bytes(count: float) -> str:
    units, index = ("B", "KB", "MB", "GB", "TB"), 0
    while abs(count) >= 1000 and index < len(units) - 1:
        count, index = count / 1000, index + 1
    return f"{count:.0f} B" if index == 0 else f"{count:.1f} {units[index]}"


# ----------------------------------------------------------------------------- writing
def open_no_follow(path: str | os.PathLike, flags: int, mode: int = NEW_FILE_MODE) -> int:
    """``os.open`` that never follows a final symbolic link: a link raises :class:`LinkRefused`."""
    try:
        return os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)
    except OSError as failure:
        if failure.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise LinkRefused(errno.ELOOP, link_refused_reason(path), str(path)) from None
        raise


def link_refused_reason(path: str | os.PathLike) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return (f"it is a symbolic link (to '{target}'), and gan_ignite never writes through a link, which would change "
            f"a file outside its folder: remove the link (its target is unchanged) and run again")


def create_temporary(path: str | os.PathLike) -> tuple[Path, int]:
    """A new empty file ``.<name>.<8 hex digits>.tmp`` beside ``path`` (``O_EXCL | O_NOFOLLOW``,
    mode 0666 less the umask) and its open descriptor."""
    path = Path(path)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                      NEW_FILE_MODE)
        except FileExistsError:
            continue


def _new_file_opener(path: str, flags: int) -> int:
    """``open(..., opener=)``: create a new file, never through a link (O_EXCL | O_NOFOLLOW)."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, NEW_FILE_MODE)


def _no_follow_opener(path: str, flags: int) -> int:
    return open_no_follow(path, flags)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file of its folder, flush, fsync and
    rename it over ``path`` (a symbolic link there is replaced, its target untouched). A failure
    removes the temporary file and raises as it came; ``path`` keeps its old content."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "it is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            handle = open(temporary, "wb", opener=_new_file_opener)
            break
        except FileExistsError:
            continue
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_in_place(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` directly (no temporary file, no fsync: for the many images of a sample folder),
    never through a link: a symbolic link at ``path`` is removed and replaced by the new file."""
    try:
        handle = open(path, "wb", opener=_no_follow_opener)
    except LinkRefused:
        os.unlink(path)  # the link itself goes; its target is untouched
        handle = open(path, "wb", opener=_new_file_opener)
    with handle:
        write(handle)


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` to ``path`` in one write, without following a link (:class:`LinkRefused`).
    A failed append is cut off again; a line torn by an earlier kill is ended first."""
    if not data:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b", buffering=0, opener=_no_follow_opener) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file", str(path))
        start = handle.seek(0, os.SEEK_END)
        if start:
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[handle.write(view):]
        except OSError:
            handle.truncate(start)
            raise


# ----------------------------------------------------------------------------- outputs against inputs
def refuse_same_file(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike],
                     error: type[Exception] = UnsafeFileError) -> None:
    """Refuse an output (``{label: path}``) that is one of the inputs (``{label: path}``: the same
    file by ``os.path.samefile``, through links and other spellings) or another of the outputs:
    writing it would destroy what is about to be read."""
    given = [(label, Path(path)) for label, path in outputs.items() if path]
    for index, (out_label, out) in enumerate(given):
        others = [*inputs.items(), *[(label, path) for label, path in given[index + 1:]]]
        for in_label, source in others:
            if _same_file(out, Path(source)):
                what = "the input" if (in_label, source) in inputs.items() else "the output"
                raise error(f"{out_label} '{out}' is {what} {in_label} '{source}': writing it would destroy "
                            f"{'an input before it is read' if what == 'the input' else 'the other output'}. Choose "
                            f"another output path; nothing was computed or written.")


def _same_file(first: Path, second: Path) -> bool:
    with contextlib.suppress(OSError):
        if first.exists() and second.exists():
            return os.path.samefile(first, second)
    return _resolved(first) == _resolved(second)


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def require_writable_target(path: str | os.PathLike, label: str, error: type[Exception] = UnsafeFileError) -> None:
    """Refuse, before any work, an output file that could not be written: a directory, a parent
    that is a file, a folder without write permission (probed with a temporary file, removed)."""
    path = Path(path)
    fix = f"Choose a writable path for {label}; nothing was computed."
    if path.is_dir():
        raise error(f"{label} '{path}' is a directory, not a file. {fix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary, descriptor = create_temporary(path)
        os.close(descriptor)
        os.unlink(temporary)
    except OSError as failure:
        raise error(f"{label} '{path}' cannot be written ({failure.strerror or failure}). {fix}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
