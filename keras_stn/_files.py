"""Writing results whole or not at all."""

import contextlib
import json
import os
import shutil


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def move_into_place(source, target):
    """Replaces `target` by the finished file or folder `source`.

    `source` is first moved beside `target` (a copy when it lies on another
    file system), then renamed over it; what `target` held is renamed aside
    first and removed last, so a kill leaves the old result or the new one,
    never a mix.
    """
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(target))
    staged = os.path.join(parent, f".{name}.incoming")
    old = os.path.join(parent, f".{name}.old")
    _remove(staged)
    shutil.move(source, staged)
    _remove(old)
    if os.path.lexists(target):
        os.replace(target, old)
    os.replace(staged, target)
    _remove(old)


def write_json(path, value):
    """Writes `value` to `path` whole or not at all (a kill mid-write
    leaves the previous file)."""
    staged = path + ".incoming"
    with open(staged, "w") as file:
        json.dump(value, file, indent=2)
    os.replace(staged, path)


@contextlib.contextmanager
def file_lock(path):
    """Holds an exclusive lock on the file `path` (created if missing) for
    the block: processes started together (test workers, two training runs
    on a fresh machine) take turns. The operating system releases it if the
    holder dies."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
