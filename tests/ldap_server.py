"""A real OpenLDAP ``slapd`` for tests (Debian packages ``slapd`` and ``ldap-utils``).

Configured from a private ``slapd.conf`` in a temporary directory (never the system's
``cn=config``), with an mdb database loaded by ``slapadd``, listening on 127.0.0.1 on a free
port; started in the foreground (``-d 0``) so the test owns the process and kills it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
PEOPLE = f"ou=People,{SUFFIX}"
GROUPS = f"ou=Groups,{SUFFIX}"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath {modules}
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {dir}/db
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
"""


def person(uid: str, password: str, mail: str | None = None) -> str:
    lines = [f"dn: uid={uid},{PEOPLE}", "objectClass: inetOrgPerson", f"uid: {uid}",
             f"cn: {uid}", f"sn: {uid}", f"userPassword: {password}"]
    if mail:
        lines.append(f"mail: {mail}")
    return "\n".join(lines)


def posix_group(cn: str, gid: int, members: list[str]) -> str:
    return "\n".join([f"dn: cn={cn},{GROUPS}", "objectClass: posixGroup", f"cn: {cn}",
                      f"gidNumber: {gid}", *(f"memberUid: {m}" for m in members)])


def dn_group(cn: str, member_uids: list[str]) -> str:
    return "\n".join([f"dn: cn={cn},{GROUPS}", "objectClass: groupOfNames", f"cn: {cn}",
                      *(f"member: uid={m},{PEOPLE}" for m in member_uids)])


def base_entries() -> list[str]:
    return [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: Groups",
    ]


def missing_tools() -> str | None:
    """Why slapd cannot run here, or None."""
    for tool in ("slapd", "slapadd", "ldapmodify"):
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists()):
            return f"{tool} not installed (apt-get install slapd ldap-utils)"
    if not (MODULE_DIR / "back_mdb.so").exists() and not (MODULE_DIR / "back_mdb.la").exists():
        return "slapd's back_mdb module not found"
    return None


def tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class LdapServer:
    uri: str
    port: int
    directory: Path
    proc: subprocess.Popen

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the directory's root (``ldapmodify``)."""
        subprocess.run(
            [tool("ldapmodify"), "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif.encode(), check=True, capture_output=True, timeout=30,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def start_slapd(directory: Path, entries: list[str]) -> LdapServer:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "db").mkdir(exist_ok=True)
    conf = directory / "slapd.conf"
    conf.write_text(CONF.format(schema=SCHEMA_DIR, dir=directory, modules=MODULE_DIR,
                                suffix=SUFFIX, root_dn=ROOT_DN, root_password=ROOT_PASSWORD))
    ldif = directory / "data.ldif"
    ldif.write_text("\n\n".join(base_entries() + entries) + "\n")
    subprocess.run([tool("slapadd"), "-f", str(conf), "-l", str(ldif)], check=True,
                   capture_output=True, timeout=60)
    port = free_port()
    uri = f"ldap://127.0.0.1:{port}/"
    with open(directory / "slapd.log", "w") as log:
        proc = subprocess.Popen([tool("slapd"), "-f", str(conf), "-h", uri, "-d", "0"],
                                stdout=log, stderr=subprocess.STDOUT)
    server = LdapServer(uri.rstrip("/"), port, directory, proc)
    wait_until_listening(server)
    return server


def wait_until_listening(server: LdapServer, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"slapd exited: {(server.directory / 'slapd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    server.stop()
    raise RuntimeError("slapd did not start listening")
