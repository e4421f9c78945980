"""``saga topology apply | check | users``: the broker set-up of a deployment, done once.

``apply`` runs with administrator credentials (``AMQP_URL`` or ``--url``): it declares
every exchange, queue and binding of the registered sagas (``SAGA_DEFINITIONS``, the same
declarations ``deploy/rabbitmq/definitions.json`` is generated from) and sets the
namespace's policies through the management API. ``check`` looks passively and lists what
is missing. ``users`` prints, or with ``--apply`` creates, one user per service with
permissions for that service's own queues and exchanges only; the services then run with
``SAGA_DECLARE_TOPOLOGY=false``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.exceptions import AMQPError

from orchestrator.errors import BrokerUnavailable
from orchestrator.messaging.management import Management, ManagementError, management_for
from orchestrator.messaging.permissions import service_users

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

    from orchestrator.messaging.permissions import ServiceUser
    from orchestrator.messaging.topology import Topology
    from orchestrator.settings import Settings

__all__ = ["apply_policies", "apply_topology", "password_variable", "register"]


async def _connect(url: str, name: str) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(
            url.split(",", maxsplit=1)[0].strip(),
            client_properties={"connection_name": name},
            timeout=10,
        )
    except (TimeoutError, OSError, AMQPError) as e:
        raise BrokerUnavailable(f"cannot connect to RabbitMQ: {e!r}") from e


def _management(settings: Settings, args: argparse.Namespace) -> Management:
    return management_for(
        args.url or settings.amqp_url,
        args.management_url or os.environ.get("SAGA_MANAGEMENT_URL") or None,
    )


async def apply_topology(topology: Topology, url: str) -> None:
    """Declare every exchange, queue and binding of ``topology`` (idempotent)."""
    connection = await _connect(url, f"{topology.namespace}.topology")
    try:
        await topology.declare(await connection.channel())
    finally:
        await connection.close()


async def apply_policies(topology: Topology, management: Management) -> tuple[int, int]:
    """Set the namespace's policies and remove its stale ones (a retry tier dropped);
    (set, removed)."""
    wanted = {p.name: p for p in topology.policies()}
    for policy in wanted.values():
        await management.put_policy(policy)
    ours = (f"{topology.namespace}.work", f"{topology.namespace}.retry.")
    stale = [
        p["name"]
        for p in await management.policies()
        if p["name"].startswith(ours) and p["name"] not in wanted
    ]
    for name in stale:
        await management.delete_policy(name)
    return len(wanted), len(stale)


async def cmd_apply(settings: Settings, args: argparse.Namespace) -> int:
    """Declare the topology, then set the policies."""
    topology = settings.topology()
    await apply_topology(topology, args.url or settings.amqp_url)
    queues, exchanges = len(topology.all_queue_names()), len(topology.exchanges)
    print(f"declared {exchanges} exchanges and {queues} queues of {topology.namespace!r}")
    if args.no_policies:
        return 0
    try:
        done, removed = await apply_policies(topology, _management(settings, args))
    except ManagementError as e:
        print(f"policies not set: {e}", file=sys.stderr)
        return 2
    print(f"set {done} policies" + (f", removed {removed} stale ones" if removed else ""))
    return 0


async def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """List what is missing; exit 1 if anything is."""
    topology = settings.topology()
    connection = await _connect(args.url or settings.amqp_url, f"{topology.namespace}.check")
    try:
        missing = await topology.missing(connection)
    finally:
        await connection.close()
    if missing:
        for what in missing:
            print(f"missing {what}")
        print(f"{len(missing)} missing; create them with `saga topology apply`", file=sys.stderr)
        return 1
    print(
        f"topology of {topology.namespace!r} complete: {len(topology.exchanges)} exchanges, "
        f"{len(topology.all_queue_names())} queues"
    )
    return 0


def password_variable(service: str) -> str:
    """The variable ``--password-from-env`` reads a service's password from."""
    return f"SAGA_{service.upper()}_PASSWORD"


def _passwords(users: list[ServiceUser], *, from_env: bool) -> dict[str, str]:
    if not from_env:
        return {u.service: secrets.token_urlsafe(24) for u in users}
    unset = [
        password_variable(u.service)
        for u in users
        if not os.environ.get(password_variable(u.service))
    ]
    if unset:
        raise SystemExit(f"--password-from-env: {', '.join(unset)} not set")
    return {u.service: os.environ[password_variable(u.service)] for u in users}


def _print_users(users: list[ServiceUser], vhost: str) -> None:
    q = shlex.quote
    for user in users:
        print(f"# {user.name} ({user.service})")
        for line in user.why:
            print(f"#   {line}")
        print(f'rabbitmqctl add_user {q(user.name)} "${password_variable(user.service)}"')
        print(
            f"rabbitmqctl set_permissions -p {q(vhost)} {q(user.name)} "
            f"{q(user.configure)} {q(user.write)} {q(user.read)}"
        )
        for exchange, pattern in user.topic_write.items():
            print(
                f"rabbitmqctl set_topic_permissions -p {q(vhost)} {q(user.name)} "
                f"{q(exchange)} {q(pattern)} '.*'"
            )
        print()


async def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    """Print the users as rabbitmqctl commands, or create them."""
    users = service_users(settings.topology())
    if args.service:
        users = [u for u in users if u.service in args.service]
    management = _management(settings, args)
    if not args.apply:
        _print_users(users, management.vhost)
        return 0
    passwords = _passwords(users, from_env=args.password_from_env)
    for user in users:
        await management.put_user(user, passwords[user.service])
        if args.password_from_env:
            print(f"{user.name}: created, password from {password_variable(user.service)}")
        else:
            print(f"{user.name}: created, password {passwords[user.service]}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``saga topology``."""
    group = sub.add_parser(
        "topology",
        help="declare and check the broker topology, create the services' users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest="action", required=True)
    apply = actions.add_parser("apply", help="declare the topology and set the policies")
    apply.add_argument("--no-policies", action="store_true", help="declare only")
    apply.set_defaults(run=cmd_apply)
    check = actions.add_parser("check", help="list missing exchanges and queues (exit 1)")
    check.set_defaults(run=cmd_check)
    users = actions.add_parser("users", help="print (or --apply) one user per service")
    users.add_argument("--apply", action="store_true", help="create them (management API)")
    users.add_argument(
        "--password-from-env",
        action="store_true",
        help="passwords from SAGA_<SERVICE>_PASSWORD (default: random ones, printed)",
    )
    users.add_argument("--service", action="append", help="only this service (repeatable)")
    users.set_defaults(run=cmd_users)
    for action in (apply, check, users):
        action.add_argument(
            "--url", default=None, help="AMQP URL with admin rights (default: AMQP_URL)"
        )
        action.add_argument(
            "--management-url",
            default=None,
            help="default SAGA_MANAGEMENT_URL, else http://<AMQP host>:15672 with its credentials",
        )
