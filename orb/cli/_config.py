# -*- test-case-name: tests.test_cli_function -*-
"""
Where the ``orb`` command keeps its files, and which tracker it talks to.

- The owner's directory is ``$ORB_HOME``, else ``~/.orb`` (mode 0700). It
  holds ``owner.key`` (the owner's Ed25519 key, PEM PKCS#8, mode 0600) and
  ``config.toml``.
- The tracker is, first found: ``--tracker``, then ``$ORB_TRACKER``, then
  ``tracker = "HOST:PORT"`` in ``config.toml``. Each is
  ``[NODEID@]HOST:PORT`` (``[v6]:PORT`` for IPv6; NODEID, 64 hex digits,
  pins the tracker's node key).
- The network name (the wire magic) is ``--network``, then
  ``$ORB_NETWORK``, then ``network = "NAME"`` in ``config.toml``, else
  ``main``.
- The tracker's HTTP API (``orb ls``, ``orb info``, and the gateway URL
  that ``orb deploy`` prints) is ``--api``, then ``$ORB_API``, then
  ``api = "http://HOST:PORT"`` in ``config.toml``.
"""

import os
import re
import tomllib

import attrs

from orb.protocol import addresses

CONFIG_NAME = "config.toml"
OWNER_KEY_NAME = "owner.key"
HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                         r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?\Z")


class ConfigError(Exception):
    """A setting is missing or unusable; the message names where it came from and the fix."""


def orb_home(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get("ORB_HOME") or os.path.join(os.path.expanduser("~"), ".orb")


def default_key_path(environ=None):
    return os.path.join(orb_home(environ), OWNER_KEY_NAME)


@attrs.frozen
class TrackerAddress:
    host: str
    port: int
    node_id: bytes | None
    source: str  # "--tracker", "ORB_TRACKER" or the config file's path

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_tracker(text, source):
    """``[NODEID@]HOST:PORT`` -> TrackerAddress; ConfigError naming ``source`` otherwise."""
    example = "e.g. 192.0.2.7:7400, tracker.example.org:7400 or [2001:db8::7]:7400"
    if not isinstance(text, str):
        raise ConfigError(f"{source}: tracker = {text!r} is not text: give HOST:PORT, {example}")
    node_hex, at, hostport = text.strip().rpartition("@")
    node_id = None
    if at:
        try:
            node_id = addresses.node_id_from_hex(node_hex)
        except addresses.AddressError:
            raise ConfigError(f"{source}: {text!r}: {node_hex!r} is not a node id (64 lowercase hex digits)") from None
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]@]+):(\d{1,5})", hostport)
    if not match:
        raise ConfigError(f"{source}: {text!r} is not HOST:PORT: {example}")
    host, port = match.group(1) or match.group(3), int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ConfigError(f"{source}: {text!r}: the port must be 1..65535")
    try:
        host = addresses.check_ip(host)
    except addresses.AddressError:
        if match.group(1) or not HOSTNAME_RE.match(host) or host.replace(".", "").isdigit():
            raise ConfigError(f"{source}: {text!r}: {host!r} is neither an IP address nor a host name") from None
    return TrackerAddress(host, port, node_id, source)


def resolve_tracker(flag=None, environ=None, config_path=None):
    """
    The tracker to talk to: ``flag`` (--tracker), else $ORB_TRACKER, else
    ``tracker`` in config.toml. ConfigError when none is set, or when the one
    that is set is malformed (a bad value is never skipped for the next).
    """
    environ = os.environ if environ is None else environ
    if flag:
        return parse_tracker(flag, "--tracker")
    if environ.get("ORB_TRACKER"):
        return parse_tracker(environ["ORB_TRACKER"], "ORB_TRACKER")
    path = config_path or os.path.join(orb_home(environ), CONFIG_NAME)
    config = read_config(path)
    if "tracker" in config:
        return parse_tracker(config["tracker"], path)
    raise ConfigError(f"no tracker given: pass --tracker HOST:PORT, set ORB_TRACKER, "
                      f"or write tracker = \"HOST:PORT\" in {path}")


def read_config(path):
    """The parsed config.toml, or {} when there is none."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}: fix the TOML syntax") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


DEFAULT_NETWORK = "main"
NETWORK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def _setting(name, env_name, flag, environ, config_path):
    """(value, where it came from) of the first of --flag, $ENV, config.toml that is set; (None, None) if none."""
    environ = os.environ if environ is None else environ
    if flag:
        return flag, f"--{name}"
    if environ.get(env_name):
        return environ[env_name], env_name
    path = config_path or os.path.join(orb_home(environ), CONFIG_NAME)
    config = read_config(path)
    if name in config:
        return config[name], path
    return None, None


def resolve_network(flag=None, environ=None, config_path=None):
    """The network to join: --network, $ORB_NETWORK, ``network`` in config.toml, else "main"."""
    value, source = _setting("network", "ORB_NETWORK", flag, environ, config_path)
    if value is None:
        return DEFAULT_NETWORK
    if not isinstance(value, str) or not NETWORK_RE.match(value):
        raise ConfigError(f"{source}: network = {value!r} is not a network name: 1 to 63 letters, digits, "
                          f"'.', '_' or '-' (the daemons' --network)")
    return value


def resolve_api(flag=None, environ=None, config_path=None, required=True):
    """
    The tracker's HTTP API base URL (no trailing slash): --api, $ORB_API,
    ``api`` in config.toml. None when none is set and not ``required``.
    """
    value, source = _setting("api", "ORB_API", flag, environ, config_path)
    if value is None:
        if not required:
            return None
        path = config_path or os.path.join(orb_home(environ), CONFIG_NAME)
        raise ConfigError(f"no tracker API given: pass --api http://HOST:PORT, set ORB_API, or write "
                          f"api = \"http://HOST:PORT\" in {path} (the tracker's --http port)")
    match = isinstance(value, str) and re.fullmatch(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?", value.strip())
    if not match:
        raise ConfigError(f"{source}: api = {value!r} is not an http:// or https:// URL, e.g. "
                          f"http://127.0.0.1:7480")
    return value.strip().rstrip("/")
