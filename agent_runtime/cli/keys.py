"""``agent-runtime keys init|list|rotate|retire``: the envelope signing keys in the key file.

The key file (agent_runtime/signing.py) is ``AGENT_RUNTIME_SIGNING_KEYS_FILE``, else
``signing-keys`` in the runtime directory; its first key signs, every key verifies. Running
workers re-read it within seconds, so a rotation needs no restart:

* ``rotate`` adds a new key as verify-only, waits until every process has re-read the file
  (``--settle``, default twice the reload interval), then makes it the signing key; the old
  key keeps verifying what is still in flight;
* ``retire ID`` removes a verify-only key once nothing signed with it can still be accepted
  (after the pipeline's ``max_age``: older entries are dead-lettered ``stale`` anyway).

Secrets are never printed: keys are shown by id. Keys given by ``AGENT_RUNTIME_SIGNING_KEY``
are rotated by the documented steps instead (docs/security.md, "Rotating the signing key").
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from agent_runtime.cli.common import Args, json_option, runs
from agent_runtime.errors import ConfigError
from agent_runtime.signing import (
    RELOAD_EVERY,
    SIGNING_KEY_ENV,
    create_keys_file,
    edit_keys_file,
    key_id,
    keys_file,
    new_secret,
    read_secrets,
)


def register(group: click.Group) -> None:
    keys = click.Group(
        "keys",
        short_help="create, list, rotate and retire the envelope signing keys",
        help="Manage the envelope signing key file (default: signing-keys in the "
        "runtime directory, or $AGENT_RUNTIME_SIGNING_KEYS_FILE). The first key signs, every "
        "key verifies; running workers re-read the file within seconds, so 'rotate' and "
        "'retire' need no restart. Keys are shown by id, never by secret.",
    )
    for name, text in (
        ("init", "create the key file with a fresh key unless it exists"),
        ("list", "show the key ids: which one signs, which only verify"),
        ("rotate", "make a fresh key the signing key; the current one keeps verifying"),
        ("retire", "remove a verify-only key"),
    ):
        params: list[click.Parameter] = [
            click.Option(
                ["--file"],
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                metavar="FILE",
                help="the key file (default: $AGENT_RUNTIME_SIGNING_KEYS_FILE, else "
                "signing-keys in the runtime directory)",
            )
        ]
        if name == "retire":
            params.insert(0, click.Argument(["key_id"], metavar="ID"))
        if name == "rotate":
            params.append(
                click.Option(
                    ["--settle"],
                    type=float,
                    default=2 * RELOAD_EVERY + 1,
                    show_default=True,
                    metavar="SECONDS",
                    help="seconds between adding the new key and signing with it, so every "
                    "running process knows it first",
                )
            )
        if name == "list":
            params.append(json_option("print [{id, signs}] as JSON"))
        keys.add_command(
            click.Command(
                name,
                callback=runs(run, action=name),
                short_help=text,
                help=f"{text[0].upper()}{text[1:]}.",
                params=params,
            )
        )
    group.add_command(keys)


def run(args: Args) -> int:
    path: Path = args.file or keys_file()
    if args.action == "init":
        created = create_keys_file(path, [new_secret()])
        ids = [key_id(s) for s in read_secrets(path)]
        print(f"{'created' if created else 'exists:'} {path} (signing key {ids[0]})")
        return 0
    if args.action != "list" and os.environ.get(SIGNING_KEY_ENV):
        raise ConfigError(
            f"{SIGNING_KEY_ENV} is set, so the key file is not used: rotate the keys "
            "given in the environment as docs/security.md describes"
        )
    if not path.exists():
        raise ConfigError(f"no key file at {path}: 'agent-runtime keys init' creates one")
    if args.action == "list":
        return _list(path, as_json=args.json)
    if args.action == "rotate":
        return _rotate(path, args.settle)
    return _retire(path, args.key_id)


def _list(path: Path, *, as_json: bool = False) -> int:
    if as_json:
        ids = [key_id(secret) for secret in read_secrets(path)]
        print(json.dumps([{"id": id_, "signs": n == 0} for n, id_ in enumerate(ids)]))
        return 0
    if os.environ.get(SIGNING_KEY_ENV):
        print(f"keys come from {SIGNING_KEY_ENV} (the key file is not used)")
    for number, secret in enumerate(read_secrets(path)):
        print(f"{key_id(secret)}  {'signs and verifies' if number == 0 else 'verifies'}")
    return 0


def _rotate(path: Path, settle: float) -> int:
    fresh = new_secret()
    new = key_id(fresh.encode())
    edit_keys_file(path, lambda keys: [keys[0], fresh, *keys[1:]])  # verify-only first
    _say(f"added key {new} (verify-only); waiting {settle:g}s for running processes to load it")
    time.sleep(settle)
    keys = edit_keys_file(path, lambda keys: [fresh, *(k for k in keys if k != fresh)])
    old = [key_id(k.encode()) for k in keys[1:]]
    _say(
        f"key {new} now signs; {', '.join(old)} still verif{'ies' if len(old) == 1 else 'y'}. "
        f"Retire the old key after the pipeline's max_age: agent-runtime keys retire {old[0]}"
    )
    return 0


def _retire(path: Path, wanted: str) -> int:
    ids = [key_id(s) for s in read_secrets(path)]
    if wanted not in ids:
        raise ConfigError(f"no key {wanted!r} in {path}; keys: {', '.join(ids)}")
    if ids[0] == wanted:
        raise ConfigError(f"key {wanted} signs: rotate first ('agent-runtime keys rotate')")
    edit_keys_file(path, lambda keys: [k for k in keys if key_id(k.encode()) != wanted])
    _say(f"retired key {wanted}; entries signed with it are now refused (bad_signature)")
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
