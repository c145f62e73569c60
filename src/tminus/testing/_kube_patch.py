"""The three patch types of the Kubernetes API, as the stand-in API server
(:mod:`tminus.testing.kubeapi`) applies them: strategic merge (lists of the pod template merged
by their merge key, as the API's ``patchMergeKey`` declares for the fields tminus patches),
JSON merge (RFC 7386) and JSON patch (RFC 6902: add, remove, replace, test). A patch that
does not apply raises :class:`PatchError` (the stand-in answers 422)."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "apply_patch"]

#: The merge keys of the lists a pod template has (k8s.io/api's patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class PatchError(Exception):
    pass


def apply_patch(ptype: str, obj: Any, patch: Any) -> Any:
    if ptype == "json":
        return _json_patch(obj, patch)
    if not isinstance(patch, dict):
        raise PatchError(f"a {ptype} merge patch must be a JSON object")
    return _merge(obj, patch, strategic=ptype == "strategic")


def _merge(target: Any, patch: dict[str, Any], *, strategic: bool) -> Any:
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and not (strategic and value.get("$patch") == "replace"):
            out[key] = _merge(out.get(key), value, strategic=strategic)
        elif strategic and isinstance(value, list) and key in MERGE_KEYS:
            out[key] = _merge_list(out.get(key) or [], value, MERGE_KEYS[key])
        else:
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "$patch"}
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(_merge({}, item, strategic=True))
        else:
            out[index] = _merge(out[index], item, strategic=True)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for p in parts[:-1]:
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            raise PatchError(f"path /{'/'.join(parts)} does not exist")
    return node, parts[-1]


def _json_patch(obj: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(obj)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        parts = _pointer(op["path"])
        name = op["op"]
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {name} needs a value")
        if not parts:  # the whole document
            if name in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise PatchError(f"operation {name} on the whole document")
        parent, last = _parent(doc, parts)
        if isinstance(parent, dict):
            exists = last in parent
            if name == "test":
                if parent.get(last) != op["value"]:
                    raise PatchError(f"test of {op['path']} failed")
            elif name == "remove" or (name == "replace" and not exists):
                if not exists:
                    raise PatchError(f"path {op['path']} does not exist")
                if name == "remove":
                    del parent[last]
                else:
                    raise PatchError(f"path {op['path']} does not exist")
            elif name in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"unsupported operation {name}")
        elif isinstance(parent, list):
            if last == "-" and name == "add":
                parent.append(copy.deepcopy(op["value"]))
                continue
            if not last.isdigit() or int(last) > len(parent):
                raise PatchError(f"path {op['path']} does not exist")
            i = int(last)
            if name == "add":
                parent.insert(i, copy.deepcopy(op["value"]))
            elif i >= len(parent):
                raise PatchError(f"path {op['path']} does not exist")
            elif name == "remove":
                parent.pop(i)
            elif name == "replace":
                parent[i] = copy.deepcopy(op["value"])
            elif name == "test":
                if parent[i] != op["value"]:
                    raise PatchError(f"test of {op['path']} failed")
            else:
                raise PatchError(f"unsupported operation {name}")
        else:
            raise PatchError(f"path {op['path']} does not exist")
    return doc
