"""``agent-runtime acl [CONFIG]``: render the pipeline's Redis users as an ACL file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from agent_runtime.cli.common import (
    Args,
    config_option,
    load_pipeline,
    runs,
)
from agent_runtime.config.acl import ACL_DIR, pipeline_users
from agent_runtime.transport.acl import render_file
from agent_runtime.transport.embedded import runtime_dir


def register(group: click.Group) -> None:
    group.add_command(
        click.Command(
            "acl",
            callback=runs(run),
            short_help="render one Redis ACL user per agent type (least privilege)",
            help="Print an ACL file with one Redis user per agent type of the pipeline: "
            "each may read and ack only its own inbox, XADD only to the inboxes it publishes "
            "to and its dead-letter stream, write replies, traces and per-request state, and "
            "run no @admin/@dangerous command (KEYS, FLUSH*, CONFIG, DEBUG, ...). The default "
            "user is switched off. Passwords are random, kept one file per user (mode 0600) "
            "in --secrets-dir; the file holds their SHA-256 only. Load it with 'aclfile' in "
            "redis.conf and ACL LOAD, then start each worker with AGENT_RUNTIME_REDIS_URL="
            "redis[s]://USER:PASSWORD@HOST:PORT (docs/security.md). 'agent-runtime up' does "
            "all this by itself on the embedded server.",
            params=[
                click.Argument(["config_file"], required=False, metavar="[CONFIG]"),
                config_option(),
                click.Option(
                    ["--secrets-dir"],
                    type=click.Path(path_type=Path),
                    default=None,
                    metavar="DIR",
                    help="directory of the users' password files (default: RUNTIME_HOME/acl)",
                ),
                click.Option(
                    ["--output", "-o"],
                    type=click.Path(path_type=Path),
                    default=None,
                    metavar="FILE",
                    help="write the ACL file here (default: stdout)",
                ),
                click.Option(
                    ["--keep-default-user"],
                    is_flag=True,
                    help="leave the server's default user as it is (do not add 'user default off')",
                ),
            ],
        )
    )


def run(args: Args) -> int:
    if args.config_file:
        args.config = args.config_file
    pipeline = load_pipeline(args)
    secrets_dir = args.secrets_dir or runtime_dir() / ACL_DIR
    users = pipeline_users(pipeline, secrets_dir)
    text = render_file(users, disable_default=not args.keep_default_user)
    if args.output is None:
        sys.stdout.write(text)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    names = ", ".join(user.name for user in users)
    print(
        f"agent-runtime: {len(users)} user(s) ({names}); passwords in {secrets_dir}",
        file=sys.stderr,
    )
    return 0
