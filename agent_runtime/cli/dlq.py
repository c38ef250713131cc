"""``agent-runtime dlq list|show|replay|purge``: inspect and recover dead letters."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import click

from agent_runtime.cli.common import (
    Args,
    config_and_redis,
    json_option,
    load_pipeline,
    redis_url,
    runs,
    server_tools,
)
from agent_runtime.codec import Codec
from agent_runtime.observability import deadletters
from agent_runtime.observability.redaction import redact
from agent_runtime.observability.render import duration, table
from agent_runtime.transport.dlq import DeadLetterStore
from agent_runtime.transport.keys import Keys


def register(group: click.Group) -> None:
    dlq = click.Group(
        "dlq",
        short_help="list, show, replay or purge dead letters",
        help="Dead letters are kept per agent type in P:dlq:AGENT "
        "with the reason, the error and the original entry.",
    )
    for name, help_text in (
        ("list", "list dead letters (id, agent, reason, type, age)"),
        ("show", "show dead letters in full (redacted)"),
        ("replay", "re-publish to the original inbox and remove"),
        ("purge", "delete dead letters (asks unless --yes)"),
    ):
        params: list[click.Parameter] = [
            click.Argument(
                ["ids"],
                nargs=-1,
                required=name == "show",
                metavar="ID..." if name == "show" else "[ID]...",
            ),
            click.Option(["--agent"], help="only this agent type's dead letters"),
            click.Option(["--reason"], help="only dead letters with this reason"),
            json_option(),
        ]
        if name in ("replay", "purge"):
            params.append(
                click.Option(
                    ["--all"],
                    is_flag=True,
                    help="select every dead letter (when no ID or filter is given)",
                )
            )
            params.append(
                click.Option(
                    ["--dry-run"], is_flag=True, help="show what would be done, change nothing"
                )
            )
        if name == "purge":
            params.append(click.Option(["--yes", "-y"], is_flag=True, help="do not ask"))
        dlq.add_command(
            click.Command(
                name,
                callback=runs(run, action=name),
                short_help=help_text,
                help=f"{help_text[0].upper()}{help_text[1:]}. ID: dead-letter entry ids "
                "(from 'dlq list').",
                params=[*params, *config_and_redis()],
            )
        )
    group.add_command(dlq)


def run(args: Args) -> int:
    pipeline = load_pipeline(args)
    url = redis_url(args, pipeline)
    if args.action in ("replay", "purge") and not (
        args.ids or args.agent or args.reason or args.all
    ):
        raise SystemExit(
            f"agent-runtime dlq {args.action}: name dead letters (ID...), filter "
            "them (--agent, --reason) or pass --all"
        )
    # replay signs with the pipeline's keys (a missing key is one line, before any change)
    replaying = args.action == "replay" and not getattr(args, "dry_run", False)
    codec = pipeline.codec() if replaying else None
    return int(anyio.run(_run, args, url, pipeline.config.keys, codec))


async def _run(args: Args, url: str, keys: Keys, codec: Codec | None) -> int:
    async with server_tools(url, keys) as tools:
        store = tools.dead_letters
        letters = await deadletters.find_letters(
            store, agent=args.agent, reason=args.reason, ids=args.ids or None
        )
        if args.action == "list":
            return _list(letters, args.json)
        if args.action == "show":
            return _show(letters, args)
        if args.action == "replay":
            return await _replay(store, letters, args, codec)
        return await _purge(store, letters, args)


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(redact(data), indent=2) if as_json else redact(text))


def _list(letters: list[deadletters.Letter], as_json: bool) -> int:
    items = [letter.summary() for letter in letters]
    rows = [
        [
            i["id"],
            i["agent"],
            i["reason"],
            i["message_type"],
            i["correlation_id"],
            i["delivery_count"],
            duration(i["age_s"]),
        ]
        for i in items
    ]
    text = (
        table(["ID", "AGENT", "REASON", "TYPE", "CORRELATION", "DELIVERIES", "AGE"], rows)
        if rows
        else "no dead letters"
    )
    _print(items, as_json, text)
    return 0


def _show(letters: list[deadletters.Letter], args: Args) -> int:
    missing = sorted(set(args.ids) - {letter.id for letter in letters})
    details = [letter.detail() for letter in letters]
    _print(
        details,
        args.json,
        "\n\n".join(json.dumps(d, indent=2) for d in details) or "no such dead letter",
    )
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing or not letters else 0


async def _replay(
    store: DeadLetterStore,
    letters: list[deadletters.Letter],
    args: Args,
    codec: Codec | None,
) -> int:
    done = []
    for letter in letters:
        item = {
            "id": letter.id,
            "agent": letter.agent,
            "stream": letter.get("stream"),
            "message_id": letter.get("message_id") or None,
            "new_id": None,
        }
        if not args.dry_run:
            item["new_id"] = await deadletters.replay(store, letter, codec)
        done.append(item)
    verb = "would replay" if args.dry_run else "replayed"
    lines = [
        f"{verb} {d['id']} ({d['agent']}, message {d['message_id']}) -> {d['stream']}"
        + (f" as {d['new_id']}" if d["new_id"] else "")
        for d in done
    ]
    _print(done, args.json, "\n".join(lines) + f"\n{verb} {len(done)} dead letter(s)")
    return 0


async def _purge(store: DeadLetterStore, letters: list[deadletters.Letter], args: Args) -> int:
    if args.dry_run:
        _print(
            [x.summary() for x in letters],
            args.json,
            "\n".join(f"would purge {x.id} ({x.agent}, {x.get('reason')})" for x in letters)
            + f"\nwould purge {len(letters)} dead letter(s)",
        )
        return 0
    if letters and not args.yes and not _confirm(f"Purge {len(letters)} dead letter(s)?"):
        print("not purged", file=sys.stderr)
        return 1
    deleted = await deadletters.purge(store, letters)
    _print({"purged": deleted}, args.json, f"purged {deleted} dead letter(s)")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} refusing without a terminal: pass --yes", file=sys.stderr)
        return False
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")
