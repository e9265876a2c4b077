"""The application's daemons, each started in its pod's namespace from Debian's own packages (no Docker, no
systemd): cluster DNS (dnsmasq), a Galera cluster of MariaDB members (the Percona XtraDB Cluster analogue), Redis
as WordPress's object cache, WordPress pods of nginx + php-fpm, and the world's resolver and receivers.

Every configuration file is written here from the testbed's addresses; data, sockets and logs live in the
testbed's work folder, removed when it goes down.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from mimir.errors import TestbedError
from mimir.sources.testbed.network import OUTSIDE_RESOLVER, Pod
from mimir.sources.testbed.processes import Daemon, in_netns, run

FILES = Path(__file__).with_name("files")
CLUSTER_DOMAIN = "cluster.local"
DATABASE_PORT, GALERA_PORT, REDIS_PORT, PHP_PORT = 3306, 4567, 6379, 9000
RELAY_PORT = 8089  # the exfiltration implant behind nginx, on the pod's loopback
IMPLANT = "/wp-content/uploads/.cache"  # the web path nginx hands to the implant


def resolv_conf(namespace: str, dns_vip: str) -> str:
    """A pod's resolver, as the kubelet writes it: cluster DNS, the Kubernetes search list, ndots:5."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"nameserver {dns_vip}\nsearch {search}\noptions ndots:5\n"


def wait_for(check, what: str, timeout: float, daemon: Daemon | None = None, step: float = 0.2) -> None:
    """Poll `check()` until it is true; a TestbedError naming `what` (and the daemon's last words) otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon is not None and not daemon.alive():
            raise TestbedError(f"{what}: {daemon.name} exited: {daemon.tail()}")
        if check():
            return
        time.sleep(step)
    tail = f" ({daemon.tail()})" if daemon is not None else ""
    raise TestbedError(f"{what}: not ready within {timeout:g} s{tail}")


# cluster DNS --------------------------------------------------------------------------------------------------------
def dns(pod: Pod, work: Path, names: dict[str, str]) -> Daemon:
    """dnsmasq answering the cluster's names from a hosts file and forwarding the rest to the world's resolver,
    as CoreDNS forwards to the node's resolver."""
    hosts = work / "dns-hosts"
    hosts.write_text("".join(f"{ip} {name}\n" for name, ip in sorted(names.items())))
    command = [
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--addn-hosts={hosts}",
        f"--local=/{CLUSTER_DOMAIN}/",
        f"--server={OUTSIDE_RESOLVER}",
        f"--listen-address={pod.ip}",
        "--bogus-priv",
        "--bind-interfaces",
        "--log-queries",
        "--log-facility=-",
        "--pid-file=",
        "--user=root",
    ]
    return Daemon(pod.name, pod.netns, command, work / "logs" / f"{pod.name}.log").start()


# the world ----------------------------------------------------------------------------------------------------------
def world(netns: str, work: Path) -> Daemon:
    """The outside namespace's resolver and receiver (mimir.sources.testbed.world), logging what arrives."""
    command = [sys.executable, "-m", "mimir.sources.testbed.world", "--log", str(work / "world.jsonl")]
    return Daemon("world", netns, command, work / "logs" / "world.log").start()


# the database ------------------------------------------------------------------------------------------------------
def galera_conf(member: Pod, index: int, peers: list[str], work: Path) -> Path:
    """One member's my.cnf: its own data folder and socket, Galera replication to every peer over rsync SST."""
    home = work / member.name
    (home / "data").mkdir(parents=True, exist_ok=True)
    shutil.chown(home, "mysql", "mysql")
    shutil.chown(home / "data", "mysql", "mysql")
    conf = home / "my.cnf"
    conf.write_text(f"""[mysqld]
user = mysql
datadir = {home / "data"}
socket = {home / "mysqld.sock"}
pid-file = {home / "mysqld.pid"}
log-error = {work / "logs" / f"{member.name}-error.log"}
bind-address = {member.ip}
port = {DATABASE_PORT}
skip-name-resolve
max_connections = 200
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
innodb_flush_log_at_trx_commit = 2
wsrep_on = ON
wsrep_provider = /usr/lib/galera/libgalera_smm.so
wsrep_cluster_name = my-release-pxc
wsrep_cluster_address = gcomm://{",".join(peers)}
wsrep_node_address = {member.ip}
wsrep_node_name = {member.name}
wsrep_sst_method = rsync
wsrep_provider_options = "gcache.size=64M"
wsrep_sync_wait = 1
server_id = {index + 1}
""")
    return conf


def socket_of(member: Pod, work: Path) -> Path:
    return work / member.name / "mysqld.sock"


def sql(member: Pod, work: Path, statement: str, timeout: float = 30) -> str:
    """A statement run as root over the member's own socket (a unix socket: no packet reaches the capture)."""
    return run(
        ["mariadb", f"--socket={socket_of(member, work)}", "-N", "-B", "-e", statement],
        timeout=timeout,
        what=f"{member.name}: SQL",
    )


def synced(member: Pod, work: Path) -> bool:
    try:
        out = sql(member, work, "SHOW STATUS LIKE 'wsrep_local_state_comment'", timeout=5)
    except TestbedError:
        return False
    return out.split()[-1:] == ["Synced"]


def cluster_size(member: Pod, work: Path) -> int:
    out = sql(member, work, "SHOW STATUS LIKE 'wsrep_cluster_size'", timeout=5)
    return int(out.split()[-1])


def start_member(member: Pod, conf: Path, work: Path, *, bootstrap: bool, timeout: float) -> Daemon:
    """Start a member (the first one bootstraps a new cluster) and wait until it is Synced."""
    command = ["mariadbd", f"--defaults-file={conf}"] + (["--wsrep-new-cluster"] if bootstrap else [])
    daemon = Daemon(member.name, member.netns, command, work / "logs" / f"{member.name}.log").start()
    wait_for(lambda: synced(member, work), f"database member {member.name}", timeout, daemon, step=0.3)
    return daemon


def install_database(first: Pod, work: Path) -> None:
    """The first member's system tables; the others receive everything by state transfer."""
    run(
        [
            "mariadb-install-db",
            "--user=mysql",
            f"--datadir={work / first.name / 'data'}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        timeout=120,
        what=f"{first.name}: mariadb-install-db",
    )


def create_schema(first: Pod, work: Path, password: str) -> None:
    sql(
        first,
        work,
        "CREATE DATABASE IF NOT EXISTS wordpress; "
        f"CREATE USER IF NOT EXISTS 'wordpress'@'%' IDENTIFIED BY '{password}'; "
        "GRANT ALL PRIVILEGES ON wordpress.* TO 'wordpress'@'%';",
    )


# redis --------------------------------------------------------------------------------------------------------------
def redis(pod: Pod, work: Path) -> Daemon:
    command = [
        "redis-server",
        "--bind",
        pod.ip,
        "--port",
        str(REDIS_PORT),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(work),
    ]
    return Daemon(pod.name, pod.netns, command, work / "logs" / f"{pod.name}.log").start()


# wordpress ----------------------------------------------------------------------------------------------------------
def wordpress_config(work: Path, db_password: str, salts: dict[str, str]) -> str:
    """/etc/wordpress/config-default.php of every WordPress pod: the database and Redis by Service name, so every
    request resolves them through cluster DNS, as a pod does."""
    lines = [
        "<?php",
        "define('DB_NAME', 'wordpress');",
        "define('DB_USER', 'wordpress');",
        f"define('DB_PASSWORD', '{db_password}');",
        "define('DB_HOST', 'my-release-pxc');",
        "define('WP_REDIS_HOST', 'redis');",
        f"define('WP_CONTENT_DIR', '{work / 'wp-content'}');",
        "define('AUTOMATIC_UPDATER_DISABLED', true);",
        "define('FS_METHOD', 'direct');",
        *(f"define('{k}', '{v}');" for k, v in sorted(salts.items())),
    ]
    return "\n".join(lines) + "\n"


def content_folder(work: Path) -> None:
    """WP_CONTENT_DIR shared by the WordPress pods (a volume): Debian's themes and plugins, the must-use plugin,
    the Redis object cache drop-in, and uploads."""
    content = work / "wp-content"
    (content / "mu-plugins").mkdir(parents=True, exist_ok=True)
    (content / "uploads").mkdir(exist_ok=True)
    for part in ("themes", "plugins"):
        if not (content / part).exists():
            (content / part).symlink_to(Path("/usr/share/wordpress/wp-content") / part)
    shutil.copy(FILES / "object-cache.php", content / "object-cache.php")
    shutil.copy(FILES / "mimir-testbed.php", content / "mu-plugins" / "mimir-testbed.php")
    shutil.chown(content / "uploads", "www-data", "www-data")


def nginx_conf(pod: Pod, home: Path) -> Path:
    conf = home / "nginx.conf"
    temp = home / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"""user www-data;
worker_processes 1;
pid {home / "nginx.pid"};
error_log {home / "nginx-error.log"} warn;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {temp}/body;
    fastcgi_temp_path {temp}/fastcgi;
    proxy_temp_path {temp}/proxy;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_timeout 5;
    server {{
        listen {pod.ip}:80;
        root /usr/share/wordpress;
        index index.php;
        location = {IMPLANT} {{
            proxy_pass http://127.0.0.1:{RELAY_PORT};
            proxy_buffering off;
            proxy_read_timeout 900s;
        }}
        location / {{ try_files $uri $uri/ /index.php?$args; }}
        location ~ \\.php$ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass 127.0.0.1:{PHP_PORT};
        }}
    }}
}}
""")
    return conf


def php_conf(home: Path) -> Path:
    conf = home / "php-fpm.conf"
    conf.write_text(f"""[global]
pid = {home / "php-fpm.pid"}
error_log = {home / "php-fpm.log"}
daemonize = no
[www]
user = www-data
group = www-data
listen = 127.0.0.1:{PHP_PORT}
pm = static
pm.max_children = 4
""")
    return conf


def wordpress(pod: Pod, work: Path) -> list[Daemon]:
    """php-fpm and nginx of one WordPress pod; ready when nginx answers on the pod's address."""
    home = work / pod.name
    home.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    php = Daemon(
        f"{pod.name}/php-fpm", pod.netns, ["php-fpm8.2", "-F", "-y", str(php_conf(home))], logs / f"{pod.name}-php.log"
    ).start()
    web = Daemon(
        f"{pod.name}/nginx",
        pod.netns,
        ["nginx", "-c", str(nginx_conf(pod, home)), "-g", "daemon off;"],
        logs / f"{pod.name}-nginx.log",
    ).start()
    return [php, web]


def php(pod: Pod, script: Path, *args: str, timeout: float = 300) -> str:
    """A PHP script run in a WordPress pod (its resolver and config), as a one-off Job would."""
    return run(in_netns(pod.netns, ["php", str(script), *args]), timeout=timeout, what=f"{pod.name}: php {script.name}")
