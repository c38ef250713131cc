"""The Redis users of a pipeline (``agent-runtime acl``, ``up``): who publishes to whom,
from the agent classes' ``produces`` and the routing config; the rules themselves are
:mod:`agent_runtime.transport.acl`'s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import ConfigError
from agent_runtime.transport.acl import (
    ADMIN_USER,
    AclUser,
    PasswordStore,
    admin_rules,
    agent_users,
    install_users,
    user_name,
    with_credentials,
)
from agent_runtime.transport.embedded import runtime_dir

#: Folder of the runtime home holding the Redis users' passwords (one 0600 file each).
ACL_DIR = "acl"


def publish_targets(pipeline: Pipeline) -> dict[str, list[str]]:
    """Agent type -> the agent types whose inboxes it may write: every consumer of a message
    type it produces (an explicit ``to`` can only name one of those) and the routes' targets."""
    consumers: dict[str, set[str]] = {}
    for agent in pipeline.agents.values():
        for message_type in agent.consumes:
            consumers.setdefault(message_type, set()).add(agent.name)
    for message_type, target in pipeline.routing.table.items():
        consumers.setdefault(message_type, set()).add(target)
    targets: dict[str, list[str]] = {}
    for agent in pipeline.agents.values():
        found: set[str] = set()
        for model in agent.cls.produces:
            found |= consumers.get(model.message_type, set())
        targets[agent.name] = sorted(found)
    return targets


def pipeline_users(pipeline: Pipeline, secrets_dir: Path) -> list[AclUser]:
    """One ACL user per agent type of ``pipeline``, passwords kept in ``secrets_dir``."""
    try:
        return agent_users(
            pipeline.config.keys,
            publish_targets(pipeline),
            PasswordStore(secrets_dir),
            reply_streams=pipeline.config.reply_streams,
        )
    except ValueError as exc:
        raise ConfigError(f"reply_streams: {exc}") from None


@dataclass(frozen=True)
class Credentials:
    """URLs of a locked-down server: the operator's (admin) and each agent type's."""

    admin_url: str
    agent_urls: dict[str, str]


async def lock_down(pipeline: Pipeline, url: str, secrets_dir: Path) -> Credentials:
    """Give the server at ``url`` (reached as a user allowed to change ACLs, e.g. the
    embedded server's default user) an admin user and one user per agent type, and switch
    its default user off. Passwords are kept in ``secrets_dir`` (0600 files)."""
    store = PasswordStore(secrets_dir)
    admin = AclUser(ADMIN_USER, store.get(ADMIN_USER), admin_rules())
    users = pipeline_users(pipeline, secrets_dir)
    await install_users(url, users, admin)
    agent_urls = {
        agent: with_credentials(url, user.name, user.password)
        for agent, user in zip(pipeline.agents, users, strict=True)
    }
    return Credentials(with_credentials(url, admin.name, admin.password), agent_urls)


def worker_url(url: str, pipeline: Pipeline, agent: str, secrets_dir: Path | None = None) -> str:
    """The URL a worker of ``agent`` should use: given the admin user's URL of a server ``up``
    locked down (what a worker started by hand finds recorded), its own user's instead, when
    that user's password is in ``secrets_dir`` (default: the runtime home's); any other URL
    as it is."""
    user, _, _ = url.partition("://")[2].partition("@")[0].partition(":")
    if "@" not in url or unquote(user) != ADMIN_USER:
        return url
    name = user_name(pipeline.config.keys, agent)
    try:
        password = ((secrets_dir or runtime_dir() / ACL_DIR) / name).read_text().strip()
    except FileNotFoundError:
        return url
    return with_credentials(url, name, password)


def agent_urls(pipeline: Pipeline, url: str, secrets_dir: Path) -> dict[str, str]:
    """Each agent type's URL on the server at ``url`` whose users were made from
    ``agent-runtime acl`` (passwords read from ``secrets_dir``, none made here)."""
    urls: dict[str, str] = {}
    for agent in pipeline.agents:
        name = user_name(pipeline.config.keys, agent)
        try:
            password = (secrets_dir / name).read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"--acl-secrets {secrets_dir}: no password file for user {name!r} (render the "
                "users with 'agent-runtime acl CONFIG --secrets-dir DIR' and load them first)"
            ) from None
        urls[agent] = with_credentials(url, name, password)
    return urls
