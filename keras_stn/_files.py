"""Writing results whole or not at all."""

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
