"""File safety, at the package's base: what a user hands in is read as data, never code; what we
write is complete or absent and never written through a link. One copy of each helper:

- reading: :func:`require_regular_file` (a FIFO or a device named like a data file is refused,
  never opened), :func:`load_torch_file` (``torch.load(weights_only=True)``; a pickle that asks
  for code is refused without running it), :func:`check_npz` (every ``.npy`` header checked
  against the bytes stored before NumPy allocates anything);
- writing: :func:`atomic_write` (a new temporary file, ``O_EXCL | O_NOFOLLOW``, flushed, fsynced
  and renamed over the target: a rename replaces a link itself, never its target) and
  :func:`append_text` (append-only logs, opened ``O_NOFOLLOW``, a failed append cut off again);
  every write failure is one :class:`~gan_ignite.errors.RunDirError` naming the file and the free
  space;
- outputs that are inputs, or cannot be written, refused before any work
  (:func:`refuse_same_file`, :func:`require_writable_target`, :func:`require_writable_folder`);
- memory and sizes (:func:`require_memory`, :func:`format_bytes`);
- :class:`RunLock`, the run directory's lock.

torch and numpy are imported inside the functions that need them: reading a run's history needs
neither.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import secrets
import shutil
import socket
import stat
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Optional

from gan_ignite.errors import RunDirError, UserError

try:
    import fcntl
except ImportError:  # no flock (Windows): runs there are not locked
    fcntl = None

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NEW_FILE_MODE = 0o666  # less the umask: what open(..., "w") gives (mkstemp would give 0600)
NPY_HEADER_LIMIT = 1 << 16  # numpy itself refuses longer headers
SAFE_GLOBALS = "numpy arrays and dtypes (RNG states)"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----------------------------------------------------------------------------- sizes and memory
def format_bytes(count: float) -> str:
    """``123 B``, ``4.6 MB``, ``25.3 GB``, ... (powers of 1000, as disk sizes are sold)."""
    units, index = ("B", "KB", "MB", "GB", "TB"), 0
    while abs(count) >= 1000 and index < len(units) - 1:
        count, index = count / 1000, index + 1
    return f"{count:.0f} B" if index == 0 else f"{count:.1f} {units[index]}"


def physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def require_memory(needed_bytes: float, what: str, fix: str) -> None:
    """Refuse, before any work, what would need more memory than this machine has at all (an
    estimate: a run that passes may still run short; one that fails here could never finish)."""
    available = physical_memory()
    if available is not None and needed_bytes > available:
        raise UserError(f"{what} would need about {format_bytes(needed_bytes)} of memory, more than this machine's "
                        f"{format_bytes(available)}. {fix}")


def free_space(path: Path) -> str:
    """'<size> free there' on the file system of ``path`` (or of its nearest existing parent)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{format_bytes(shutil.disk_usage(folder).free)} free there"
    except OSError:
        return "free space unknown"


# ----------------------------------------------------------------------------- reading
def require_regular_file(path: str | os.PathLike, label: str, fix: str,
                         error: type[Exception] = UserError) -> os.stat_result:
    """``os.stat`` of ``path`` (following links: reading through a link is harmless), which must be a
    regular file; otherwise ``error`` with "<label> '<path>' does not exist / is a FIFO ... <fix>"."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{label} '{path}' does not exist. {fix}") from None
    except OSError as failure:
        raise error(f"{label} '{path}' cannot be read ({failure.strerror or failure}). {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{label} '{path}' is {file_kind(info.st_mode)}, not a regular file: it is not read (a FIFO or "
                    f"device would block or never end). {fix}")
    return info


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def safe_globals() -> list[Any]:
    """What a checkpoint may hold besides tensors and plain data: NumPy arrays and dtypes (the RNG
    states ignite's engine saves). An array's reconstruction reads raw bytes; an object array's items
    go through the same restricted unpickler, so nothing here runs code from the file."""
    import numpy as np

    reconstruct = getattr(getattr(np, "_core", None), "multiarray", None)
    reconstruct = getattr(reconstruct, "_reconstruct", None) or np.core.multiarray._reconstruct
    dtypes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    return [reconstruct, np.ndarray, np.dtype, *dtypes]


def load_torch_file(path: str | os.PathLike, label: str, fix: str, error: type[Exception] = UserError) -> Any:
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
            raise error(f"{label} '{path}' is a damaged zip archive ({first_line(failure)}). {fix}") from None
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
        raise error(f"{label} '{path}' cannot be read ({type(failure).__name__}: {first_line(failure)}): it is "
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
    """The unpickler's reason without torch's advice to load with weights_only=False."""
    text = str(failure)
    for marker in ("WeightsUnpickler error:", "Unpickling error:"):
        reason = text.split(marker, 1)[1].strip().split("\n")[0].strip() if marker in text else ""
        if reason:
            return reason
    return first_line(failure)[:200]


def check_npz(path: str | os.PathLike, label: str, fix: str, error: type[Exception] = UserError) -> None:
    """An ``.npz`` that NumPy can read without surprises: a regular file, a sound zip, and every
    ``.npy`` member with a plain dtype (no objects) and a shape whose bytes are really stored (in
    total at most this machine's memory). Otherwise ``error``."""
    require_regular_file(path, label, fix, error)
    limit, total = physical_memory(), 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.filename.endswith(".npy"):
                    total += _npy_member_bytes(archive, member, f"{label} '{path}'", fix, error)
                    if limit is not None and total > limit:
                        raise error(f"{label} '{path}' would need {format_bytes(total)} of memory, more than this "
                                    f"machine has; it is not read. {fix}")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as failure:
        if isinstance(failure, error):
            raise
        raise error(f"Cannot read {label[:1].lower() + label[1:]} '{path}': it is not a readable .npz archive "
                    f"({type(failure).__name__}: {first_line(failure)}). {fix}") from None


def _npy_member_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo, where: str, fix: str,
                      error: type[Exception]) -> int:
    """The bytes one ``.npy`` member's header claims, refused when they are objects or not stored."""
    import numpy as np

    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle, max_header_size=NPY_HEADER_LIMIT)
        header_bytes = handle.tell()
    name = member.filename[:-4]
    if dtype.hasobject:
        raise error(f"{where} stores '{name}' as Python objects (pickled), which are never loaded: only numeric "
                    f"arrays are read. {fix}")
    claimed = dtype.itemsize
    for size in shape:
        claimed *= int(size)
    if claimed > member.file_size - header_bytes:
        raise error(f"{where}: the header of '{name}' claims shape {tuple(shape)} ({format_bytes(claimed)}), but only "
                    f"{format_bytes(member.file_size - header_bytes)} are stored: the file is damaged or forged and "
                    f"is not read. {fix}")
    return claimed


# ----------------------------------------------------------------------------- writing
class LinkRefused(OSError):
    """A symbolic link where a file is written in place: writing would change the file it points to."""


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


def _new_file(name: str, flags: int) -> int:
    """``open(..., opener=)``: create a new file, never through a link (O_EXCL | O_NOFOLLOW)."""
    return os.open(name, flags | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, NEW_FILE_MODE)


def open_temporary(path: str | os.PathLike) -> tuple[Path, BinaryIO]:
    """A new empty file ``.<name>.<8 hex digits>.tmp`` beside ``path`` (mode 0666 less the umask),
    open for writing; a link planted under its name is never written through."""
    path = Path(path)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, open(temporary, "wb", opener=_new_file)
        except FileExistsError:
            continue


class _RecordingWriter:
    """A binary file that remembers the first OSError of its writes: torch's zip writer turns a
    failed write (e.g. ENOSPC) into a RuntimeError ("unexpected pos ..."), which hides the reason."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:  # seek, tell, ...: what image and archive writers ask for
        return getattr(self.handle, name)


def write_failure(path: Path, error: BaseException, intact: str = "", label: str = "") -> RunDirError:
    """The one-paragraph error for a failed write of ``path`` (``label``: what the file is)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else first_line(error)
    what = f"{label} '{path}'" if label else f"'{path}'"
    if isinstance(error, OSError) and error.errno == errno.ELOOP:  # a link refused: space is not the issue
        return RunDirError(f"Could not write {what}: {reason}. {intact}".strip())
    return RunDirError(f"Could not write {what} ({reason}; {free_space(path)}). {intact}".strip())


def _write_cause(error: BaseException, recorder: _RecordingWriter) -> Optional[BaseException]:
    """The write failure behind ``error``, or None when it is not one (a bug must stay a traceback)."""
    if recorder.error is not None:
        return recorder.error
    if isinstance(error, OSError):
        return error
    if isinstance(error, RuntimeError) and any(word in str(error) for word in
                                               ("PytorchStreamWriter", "inline_container", "file write failed")):
        return error
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any], intact: str = "", fsync: bool = True,
                 label: str = "") -> None:
    """Write ``path`` through ``write(handle)`` into a new temporary file of its folder, flush (and
    fsync) and rename it over ``path``: readers, and a process killed at any moment, see the old file
    or the complete new one, and a symbolic link at ``path`` is replaced, never written through. On a
    failure the temporary file is removed and a write failure raises :func:`write_failure`
    (``label``: what the file is; ``intact``: what the user still has)."""
    path = Path(path)
    recorder: Optional[_RecordingWriter] = None
    temporary: Optional[Path] = None
    try:
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "it is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary, handle = open_temporary(path)
        with handle:
            recorder = _RecordingWriter(handle)
            write(recorder)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        cause = _write_cause(error, recorder or _RecordingWriter(None))  # type: ignore[arg-type]
        if cause is None:
            raise
        raise write_failure(path, cause, intact, label) from None


def append_text(path: str | os.PathLike, text: str, intact: str = "") -> None:
    """Append ``text`` to ``path`` in one write, never through a symbolic link (refused: its target
    is not touched). A failed append is cut off again, so the file keeps whole lines; a line torn by
    an earlier kill is ended first, so the new records never join it."""
    data, path = text.encode("utf-8"), Path(path)
    if not data:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b", buffering=0, opener=lambda name, flags: open_no_follow(name, flags)) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise OSError(errno.EINVAL, "it is not a regular file", str(path))
            start = handle.seek(0, os.SEEK_END)
            if start:
                handle.seek(start - 1)
                data = data if handle.read(1) == b"\n" else b"\n" + data
            try:
                view = memoryview(data)
                while view:
                    view = view[handle.write(view):]
            except OSError:
                handle.truncate(start)
                raise
    except OSError as error:
        raise write_failure(path, error, intact) from None


# ----------------------------------------------------------------------------- outputs against inputs
def refuse_same_file(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike],
                     error: type[Exception] = UserError) -> None:
    """Refuse an output (``{label: path}``) that is one of the inputs (the same file by
    ``os.path.samefile``, through links and other spellings) or another of the outputs: writing it
    would destroy what is about to be read."""
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
    return Path(os.path.realpath(first)) == Path(os.path.realpath(second))


def _probe(folder: Path) -> None:
    """Create ``folder`` if needed and a new file of our own in it (never through a link), removed again."""
    folder.mkdir(parents=True, exist_ok=True)
    probe, handle = open_temporary(folder / ".gan_ignite_write_test")
    handle.close()
    probe.unlink()


def require_writable_target(path: str | os.PathLike, label: str, error: type[Exception] = UserError) -> None:
    """Refuse, before any work, an output file that could not be written: a directory, a parent
    that is a file, a folder without write permission."""
    path = Path(path)
    fix = f"Choose a writable path for {label}; nothing was computed."
    if path.is_dir():
        raise error(f"{label} '{path}' is a directory, not a file. {fix}")
    try:
        _probe(path.parent)
    except OSError as failure:
        raise error(f"{label} '{path}' cannot be written ({failure.strerror or failure}). {fix}") from None


def require_writable_folder(folder: Path, problem: str, fix: str) -> None:
    """Create ``folder`` if needed and probe it; on failure a :class:`RunDirError` reading
    "<problem> (<reason>). <fix>"."""
    try:
        _probe(Path(folder))
    except OSError as error:
        raise RunDirError(f"{problem} ({error.strerror or error}). {fix}") from None


# ----------------------------------------------------------------------------- the run directory's lock
class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``, which holds who took it (host, pid, start time,
    command). The lock dies with the processes holding it; released normally its file is removed,
    and so is the directory if this lock created it and nothing else was written there.

    Not the ``filelock`` package: it opens the lock file following a symbolic link and with
    ``O_TRUNC``, so a link planted at ``.lock`` would empty the file it points to, and a second
    run would erase the holder's details before failing to lock."""

    def __init__(self, run_dir: str | os.PathLike, name: str = ".lock"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / name
        self.fd: Optional[int] = None
        self.created_dir = False

    def acquire(self) -> "RunLock":
        self.created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.fd = self._open_locked()
            holder = {"host": socket.gethostname(), "pid": os.getpid(),
                      "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      "command": " ".join(sys.argv)}
            os.ftruncate(self.fd, 0)  # in place: a replaced file would give later runs another file to lock
            os.pwrite(self.fd, json.dumps(holder).encode(), 0)
        except OSError as error:
            self.release()
            if error.errno == errno.ELOOP:
                raise RunDirError(f"The lock file '{self.path}' cannot be used: {error.strerror}. Nothing was "
                                  f"changed.") from None
            raise RunDirError(f"output_dir '{self.run_dir}' cannot be written ({error.strerror or error}; "
                              f"{free_space(self.run_dir)}). Choose a writable folder with output_dir=..., or "
                              f"free some space.") from None
        except BaseException:
            self.release()
            raise
        return self

    def _open_locked(self) -> int:
        while True:
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)  # the holder's details never go through a link
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_text(fd)
                os.close(fd)
                raise RunDirError(
                    f"output_dir '{self.run_dir}' is in use by another run ({holder}). One run directory holds "
                    f"one run, written by one process at a time: wait for that run to end (or stop it), or "
                    f"choose another output_dir=...; nothing was changed.") from None
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            os.close(fd)  # the holder removed the file while we opened it: lock the new one

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when empty: a start that failed leaves no folder behind

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *_: Any) -> None:
        self.release()

    def __reduce__(self) -> tuple:
        """Pickled for a spawned worker process, the lock's open file is passed to it: the workers
        share the lock, so it lasts while any process of the run lives."""
        from multiprocessing import reduction

        return _inherited_lock, (None if self.fd is None else reduction.DupFd(self.fd),)


def _inherited_lock(duplicate: Any) -> Optional[int]:
    return None if duplicate is None else duplicate.detach()  # kept open until the process exits


def _holder_text(fd: int, wait: float = 1.0) -> str:
    """Who holds the lock, from the details it writes right after taking it: a second run started
    at the same moment may look between the two, so they are read again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            command = str(holder.get("command", "?"))
            command = command if len(command) <= 200 else command[:197] + "..."
            return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}: {command}"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            if time.monotonic() >= deadline:
                return "a process that has not written its details yet"
            time.sleep(0.05)
