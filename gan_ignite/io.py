"""File safety: what a user hands in is read as data, never code (:func:`load_torch_file`,
:func:`check_npz`); what we write is complete or absent and never written through a link
(:func:`atomic_write`, :func:`append_text`; a failure is one :class:`~gan_ignite.errors.RunDirError`
naming the file and the free space). Also the checks that refuse an output before any work, sizes,
and :class:`RunLock`. torch and numpy are imported where needed: reading a history needs neither.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import math
import os
import secrets
import shutil
import socket
import stat
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Optional

from gan_ignite.errors import RunDirError, UserError

try:
    import fcntl
except ImportError:  # no flock (Windows): runs there are not locked
    fcntl = None

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NEW_FILE_MODE = 0o666  # less the umask: what open(..., "w") gives (mkstemp would give 0600)
NPY_HEADER_LIMIT = 1 << 16  # numpy itself refuses longer headers


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
    estimate: what passes may still run short; what fails here could never finish)."""
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
def require_regular_file(path: str | os.PathLike, label: str, fix: str, error: type[Exception] = UserError) -> None:
    """Refuse with ``error`` what is not a regular file (a FIFO or a device is never opened; links are followed)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{label} '{path}' does not exist. {fix}") from None
    except OSError as failure:
        raise error(f"{label} '{path}' cannot be read ({failure.strerror or failure}). {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{label} '{path}' is {file_kind(info.st_mode)}, not a regular file: it is not read (a FIFO or "
                    f"device would block or never end). {fix}")


def file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((name for is_kind, name in kinds.items() if is_kind(mode)), "not a regular file")


def safe_globals() -> list[Any]:
    """NumPy arrays and dtypes (the RNG states ignite saves): none runs code from the file (an array is rebuilt
    from raw bytes, an object array's items go through the same restricted unpickler)."""
    import numpy as np

    reconstruct = getattr(getattr(np, "_core", None), "multiarray", None)
    reconstruct = getattr(reconstruct, "_reconstruct", None) or np.core.multiarray._reconstruct
    dtypes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    return [reconstruct, np.ndarray, np.dtype, *dtypes]


def load_torch_file(path: str | os.PathLike, label: str, fix: str, error: type[Exception] = UserError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing, damaged or code-carrying file raises ``error``."""
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
            raise error(f"{label} '{path}' holds Python objects other than tensors and plain data ({asks_for}). "
                        f"Loading them would run code from the file, so it is refused: gan_ignite reads such files "
                        f"with torch.load(weights_only=True), allowing only numpy arrays and dtypes (RNG states). Use "
                        f"a file written by gan_ignite or the network's original release; if you trust this one, "
                        f"re-save its tensors alone (a state dict). {fix}") from None
        raise error(f"{label} '{path}' cannot be read ({_pickle_problem(failure)}): it is damaged or not a file of "
                    f"this kind (nothing in it was run). {fix}") from None
    except Exception as failure:  # torch raises many types for damaged or foreign files
        raise error(f"{label} '{path}' cannot be read ({type(failure).__name__}: {first_line(failure)}): it is "
                    f"damaged or not a file of this kind. {fix}") from None


def _unsafe_names(path: Path, failure: Exception) -> str:
    """'it asks for a.b, c.d' when the refused pickle names globals outside the allow-list, else ''."""
    import torch

    try:
        names = [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(path) if name]
    except Exception:  # a legacy (non-zip) or damaged file: the message names the first global, if any
        names = []
    text = str(failure)
    for marker in ("unsupported GLOBAL ", "Unsupported global: GLOBAL "):
        if marker in text and not names:
            names = [text.split(marker, 1)[1].split()[0]]
    return "it asks for " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else ""


def _pickle_problem(failure: Exception) -> str:
    """The unpickler's reason without torch's advice to load with weights_only=False."""
    text = str(failure)
    for marker in ("WeightsUnpickler error:", "Unpickling error:"):
        reason = text.split(marker, 1)[1].strip().split("\n")[0].strip() if marker in text else ""
        if reason:
            return reason
    return first_line(failure)[:200]


def check_npz(path: str | os.PathLike, label: str, fix: str, error: type[Exception] = UserError) -> None:
    """Refuse with ``error`` an ``.npz`` that is not a regular file and a sound zip whose ``.npy`` members
    have plain dtypes and shapes whose bytes are really stored (in all at most this machine's memory)."""
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
    claimed = dtype.itemsize * math.prod(shape)
    if claimed > member.file_size - header_bytes:
        raise error(f"{where}: the header of '{name}' claims shape {tuple(shape)} ({format_bytes(claimed)}), but only "
                    f"{format_bytes(member.file_size - header_bytes)} are stored: the file is damaged or forged and "
                    f"is not read. {fix}")
    return claimed


# ----------------------------------------------------------------------------- writing
def open_no_follow(path: str | os.PathLike, flags: int) -> int:
    """``os.open`` that never follows a final symbolic link: a link is an ELOOP error saying why."""
    try:
        return os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, NEW_FILE_MODE)
    except OSError as failure:
        if failure.errno not in (errno.ELOOP, errno.EMLINK) or not os.path.islink(path):
            raise
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    raise OSError(errno.ELOOP, f"it is a symbolic link (to '{target}'), and gan_ignite never writes through a "
                  f"link, which would change a file outside its folder: remove the link (its target is unchanged) "
                  f"and run again", str(path))


def open_temporary(path: str | os.PathLike) -> tuple[Path, BinaryIO]:
    """A new file ``.<name>.<8 hex digits>.tmp`` beside ``path``, open for writing (never a link planted there)."""
    path = Path(path)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, open(temporary, "wb", opener=lambda name, flags: open_no_follow(
                name, flags | os.O_CREAT | os.O_EXCL))
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
    reason = error.strerror if isinstance(error, OSError) and error.strerror else first_line(error)
    what = f"{label} '{path}'" if label else f"'{path}'"
    if isinstance(error, OSError) and error.errno == errno.ELOOP:  # a link refused: space is not the issue
        return RunDirError(f"Could not write {what}: {reason}. {intact}".strip())
    return RunDirError(f"Could not write {what} ({reason}; {free_space(path)}). {intact}".strip())


def _write_cause(error: BaseException, recorded: Optional[OSError]) -> Optional[BaseException]:
    """The write failure behind ``error``, or None when it is not one (a bug must stay a traceback)."""
    if recorded is not None or isinstance(error, OSError):
        return recorded or error
    torch_words = ("PytorchStreamWriter", "inline_container", "file write failed")  # torch's zip writer failed
    return error if isinstance(error, RuntimeError) and any(word in str(error) for word in torch_words) else None


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any], intact: str = "", fsync: bool = True,
                 label: str = "") -> None:
    """Write ``path`` through ``write(handle)`` into a new temporary file, flush (and fsync) it and rename it over
    ``path``: a reader or a kill sees the old file or the complete new one; a link at ``path`` is replaced."""
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
        cause = _write_cause(error, recorder.error if recorder else None)
        if cause is None:
            raise
        raise write_failure(path, cause, intact, label) from None


def append_text(path: str | os.PathLike, text: str, intact: str = "") -> None:
    """Append ``text`` to ``path``, never through a symbolic link. A failed append is cut off again and a
    line torn by an earlier kill is ended first, so the file keeps whole lines."""
    data, path = text.encode("utf-8"), Path(path)
    if not data:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b", buffering=0, opener=open_no_follow) as handle:
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
    """Refuse an output (``{label: path}``) that is an input or another output, through links and other spellings."""
    given = [(label, Path(path)) for label, path in outputs.items() if path]
    for index, (out_label, out) in enumerate(given):
        others = [*inputs.items(), *given[index + 1:]]
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


def require_writable_folder(folder: Path, problem: str, fix: str, error: type[Exception] = RunDirError) -> None:
    """Create ``folder`` if needed and a file of our own in it; on failure ``error`` "<problem> (<reason>). <fix>"."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe, handle = open_temporary(Path(folder, ".gan_ignite_write_test"))
        handle.close()
        probe.unlink()
    except OSError as failure:
        raise error(f"{problem} ({failure.strerror or failure}). {fix}") from None


def require_writable_target(path: str | os.PathLike, label: str, error: type[Exception] = UserError) -> None:
    """Refuse, before any work, an output file that could not be written (a directory, a read-only folder...)."""
    path = Path(path)
    fix = f"Choose a writable path for {label}; nothing was computed."
    if path.is_dir():
        raise error(f"{label} '{path}' is a directory, not a file. {fix}")
    require_writable_folder(path.parent, f"{label} '{path}' cannot be written", fix, error)


# ----------------------------------------------------------------------------- the run directory's lock
class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``, recording who holds it (host, pid, start, command); it dies
    with its processes. Released, its file is removed, and the directory too if this lock created it and it
    is empty. Not ``filelock``: it follows a link at the lock path and opens with ``O_TRUNC``."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self.fd: Optional[int] = None
        self.created_dir = False

    def acquire(self) -> "RunLock":
        self.created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.fd = self._open_locked()
            now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "command": " ".join(sys.argv)}
            os.ftruncate(self.fd, 0)  # in place: a replaced file would give later runs another file to lock
            os.pwrite(self.fd, json.dumps(holder).encode(), 0)
        except BaseException as error:
            self.release()
            if not isinstance(error, OSError):
                raise
            if error.errno == errno.ELOOP:
                raise RunDirError(f"The lock file '{self.path}' cannot be used: {error.strerror}. Nothing was "
                                  f"changed.") from None
            raise RunDirError(f"output_dir '{self.run_dir}' cannot be written ({error.strerror or error}; "
                              f"{free_space(self.run_dir)}). Choose a writable folder with output_dir=..., or "
                              f"free some space.") from None
        return self

    def _open_locked(self) -> int:
        while True:
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)  # the holder's details never go through a link
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not _wait_for_orphans(fd):
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
        """Pickled for a spawned worker, the lock passes its open file: it lasts while any process of the run lives."""
        from multiprocessing import reduction

        return _inherited_lock, (None if self.fd is None else reduction.DupFd(self.fd),)


def _inherited_lock(duplicate: Any) -> Optional[int]:
    return None if duplicate is None else duplicate.detach()  # kept open until the process exits


ORPHANS_WAIT_SECONDS = 30.0


def _wait_for_orphans(fd: int) -> bool:
    """True once the lock is ours, when its recorded holder is a process of this host that no longer exists:
    what still holds it are processes the killed run forked (its loader workers share the open lock file),
    which exit within seconds of their parent (PyTorch's worker watchdog looks every 5 s). False at once
    for a live holder or another host's, and after ``ORPHANS_WAIT_SECONDS``."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        pid, host = int(holder["pid"]), str(holder["host"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
        return False  # alive (or its number reused): a run in progress
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    print(f"output_dir's lock is still held by the processes of a run that ended (pid {pid}, its loader workers); "
          f"waiting up to {ORPHANS_WAIT_SECONDS:.0f} s for them to exit", file=sys.stderr, flush=True)
    deadline = time.monotonic() + ORPHANS_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    return False


def _holder_text(fd: int, wait: float = 1.0) -> str:
    """Who holds the lock, from the details written right after taking it (read again for up to ``wait``
    seconds: a run started at the same moment may look in between)."""
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
