"""Kernel sandbox for the worker processes that load untrusted models (suspects, compiled artifacts).

Loading a model file can run its author's code: a compiled ``.so`` runs its
constructors at ``dlopen`` time, and a runtime may follow paths the file names.
A separate process with a time limit keeps the evaluation alive; this module
keeps the *auditor* safe.  The worker calls :func:`enter` as its first act,
before any untrusted byte is read, and the process (and every thread it starts
later) is then confined by:

``filesystem``  Landlock: read-only access to what the runtime needs (the Python
                installation and virtual environment, this checkout's packages,
                system libraries, a few ``/proc`` / ``/sys`` / ``/dev`` entries)
                plus the paths of the policy (a private read-only copy of the
                suspect); no write, create, remove, rename, execute or device
                ioctl anywhere (only ``/dev/null`` may be written).
``network``     fresh network and System V IPC namespaces (no interface up; as
                root, or in a new user namespace otherwise) and seccomp refusing ``socket``,
                ``connect``, ``bind``, ``listen``, ``accept`` and ``io_uring``;
                Landlock refuses TCP bind/connect and abstract unix sockets and
                signals outside the sandbox.
``syscalls``    seccomp-bpf (x86_64): ``execve``/``execveat``, ``fork``/``vfork``,
                ``clone`` of a process (threads stay allowed), ``ptrace`` and
                cross-process memory access, namespaces and mounts, ``bpf``,
                module loading, keyrings, ``userfaultfd``, ``open_by_handle_at``,
                and the metadata changes Landlock does not cover (``chmod``,
                ``chown``, ``utimensat``, extended attributes); signals only to
                the worker itself.  Denied calls fail with
                ``EPERM`` (``clone3`` with ``ENOSYS`` so threads fall back to
                ``clone``); a call through another ABI (i386, x32) kills it.
``limits``      ``RLIMIT_FSIZE`` 0, ``RLIMIT_CORE`` 0, address space
                (``RLIMIT_AS``), CPU seconds, open files and processes.
``user``        started as root: the worker becomes uid/gid 65534 (``nobody``)
                with every capability dropped, except ``CAP_DAC_READ_SEARCH``
                when the Python runtime or a policy path is not readable by that
                user (e.g. a Python under ``/root``, mode 0700); Landlock still
                bounds what it reads, and seccomp refuses ``open_by_handle_at``.

Every protection is reported as a string: what is active, or ``"unavailable:
<reason>"`` (``"partial: ..."`` when it is weakened), so a caller can tell the
user exactly what protected the run (:func:`missing`); the report is read back
from the kernel where it can be (``/proc/self/status``).  Ordering inside
:func:`enter`: namespaces and resource limits while still privileged, then the
user switch, then ``PR_SET_NO_NEW_PRIVS``, Landlock, and seccomp last (with
``TSYNC``).  Landlock binds the calling thread and the threads it starts later,
so :func:`enter` must run while the worker has one thread (it is reported as
``partial`` otherwise).

Parent side: :class:`SandboxPolicy` (what the worker may read, its limits),
:func:`worker_environment` (a scrubbed environment carrying the policy),
:class:`PrivateCopy` (the suspect copied into a private read-only directory) and
:func:`probe` (what this machine offers, without sandboxing anything).

Only the standard library is imported here: the worker enters the sandbox before
torch or any runtime is imported.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import shutil
import signal
import stat
import struct
import sys
import tempfile
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The protections :func:`enter` reports, in report order.
PROTECTIONS = ("filesystem", "network", "syscalls", "limits", "user")
#: Environment variable that carries the policy (JSON) to the worker.
ENV_VAR = "SUITE_SANDBOX"
#: The unprivileged identity a root-started worker switches to (``nobody`` / ``nogroup``).
NOBODY = 65534
#: Parent environment variables a worker keeps (everything else is dropped).
KEEP_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS")

# ------------------------------------------------------------------ policy (parent side)


@dataclass
class SandboxPolicy:
    """What a sandboxed worker may do; JSON round-trips through :data:`ENV_VAR`.

    read: extra absolute paths the worker may read (the suspect's private copy,
        an artifact directory), beyond the runtime's own files.
    memory_mb: address-space limit (``RLIMIT_AS``) in MiB; None for none
        (default :func:`default_memory_mb`).
    cpu_seconds: CPU-time limit (``RLIMIT_CPU``; SIGKILL a few seconds later).
    max_files: ``RLIMIT_NOFILE``; max_procs: ``RLIMIT_NPROC`` (counts threads of
        the worker's user).
    require: the worker refuses to load anything unless every protection is
        active (see :func:`missing`).
    enabled: False runs the worker without a sandbox (reported as unavailable).
    """

    read: list[str] = field(default_factory=list)
    memory_mb: int | None = field(default_factory=lambda: default_memory_mb())
    cpu_seconds: int | None = 3600
    max_files: int = 512
    max_procs: int = 4096
    require: bool = False
    enabled: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SandboxPolicy":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("sandbox policy is not a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        policy = cls(**known)
        policy.read = [str(p) for p in policy.read]
        return policy


def default_memory_mb() -> int:
    """Default address-space limit of a worker: half of this machine's memory, at least 8 GiB."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 0
    return max(8192, int(physical // 2) >> 20)


def worker_environment(root: str, policy: SandboxPolicy | None) -> dict[str, str]:
    """A minimal environment for a worker: no secrets, tokens or proxies of the parent.

    root: the checkout whose packages the worker imports (its only PYTHONPATH
    entry).  Locale, time zone, library path and thread-count variables are kept.
    """
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1",
               PYTHONNOUSERSITE="1", HOME="/nonexistent")
    env.setdefault("LANG", "C.UTF-8")
    if policy is not None:
        env[ENV_VAR] = policy.to_json()
    return env


def python_flags() -> list[str]:
    """Interpreter flags for a worker: no user site, and (3.11+) no current directory on ``sys.path``."""
    return ["-s", "-P"] if sys.version_info >= (3, 11) else ["-s"]


class PrivateCopy:
    """A private, read-only copy of a suspect file or directory (what the sandbox lets the worker read).

    Only regular files and directories are copied (symbolic links, FIFOs and
    devices are left out, so a hostile directory cannot point the worker
    elsewhere or block the copy).  For an ``.onnx`` file, sibling files named
    ``<name>.*``/``<stem>.data`` (external tensor data) come along.  ``path`` is the
    copy, ``root`` its private directory; :meth:`cleanup` removes both.
    """

    def __init__(self, source: str | os.PathLike) -> None:
        src = Path(source)
        st = os.stat(src)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise OSError(errno.EINVAL, f"{src} is not a regular file or directory")
        self.source = src
        self.root = Path(tempfile.mkdtemp(prefix="suite-sandbox-"))
        self._finalizer = weakref.finalize(self, _remove_private_dir, self.root)
        try:
            self.path = self.root / (src.name or "suspect")
            if stat.S_ISDIR(st.st_mode):
                self._copy_tree(src, self.path)
            else:
                shutil.copyfile(src, self.path, follow_symlinks=True)
                if src.suffix.lower() == ".onnx":
                    self._copy_siblings(src)
            self._seal(self.root)
        except BaseException:
            self.cleanup()
            raise

    def _copy_siblings(self, src: Path) -> None:
        for entry in os.scandir(src.parent):
            name = entry.name
            if name != src.name and (name.startswith(src.name + ".") or name in (f"{src.stem}.data",
                                                                                  f"{src.stem}_data")) \
                    and entry.is_file(follow_symlinks=False):
                shutil.copyfile(entry.path, self.root / name, follow_symlinks=False)

    def _copy_tree(self, src: Path, dst: Path) -> None:
        dst.mkdir()
        for entry in os.scandir(src):
            if entry.is_dir(follow_symlinks=False):
                self._copy_tree(Path(entry.path), dst / entry.name)
            elif entry.is_file(follow_symlinks=False):
                shutil.copyfile(entry.path, dst / entry.name, follow_symlinks=False)

    @staticmethod
    def _seal(root: Path) -> None:
        """Directories 0555, files 0444: readable by the sandbox's user, writable by nobody but root."""
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
            os.chmod(dirpath, 0o555)

    def cleanup(self) -> None:
        """Remove the copy (also done at garbage collection and interpreter exit)."""
        self._finalizer()


def _remove_private_dir(root: Path) -> None:
    if not root.exists():
        return
    for dirpath, _, _ in os.walk(root):
        try:
            os.chmod(dirpath, 0o700)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def missing(report: dict[str, Any] | None) -> list[str]:
    """Names of the protections that are not (fully) active in a worker's report."""
    if not isinstance(report, dict):
        return list(PROTECTIONS)
    return [name for name in PROTECTIONS
            if not isinstance(report.get(name), str) or report[name].startswith(("unavailable", "partial"))]


def describe_missing(report: dict[str, Any] | None) -> str:
    """One line naming every missing protection and why."""
    if not isinstance(report, dict):
        return "no sandbox report"
    return "; ".join(f"{name}: {report.get(name, 'unavailable: not reported')}" for name in missing(report))


def unavailable(reason: str) -> dict[str, str]:
    """A report in which every protection is unavailable for ``reason``."""
    return {name: f"unavailable: {reason}" for name in PROTECTIONS}


# ------------------------------------------------------------------ kernel interfaces (ctypes)

_LINUX = sys.platform.startswith("linux")
_libc = ctypes.CDLL(None, use_errno=True)
if _LINUX:
    _libc.syscall.restype = ctypes.c_long
    _libc.prctl.restype = ctypes.c_int
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _libc.unshare.restype = ctypes.c_int
    _libc.unshare.argtypes = [ctypes.c_int]

_MACHINE = platform.machine()
_X86_64 = _MACHINE in ("x86_64", "AMD64")
# Landlock's calls have the same numbers (444-446) on every architecture of the unified syscall table;
# capset differs (the seccomp filter below is written for x86_64 only).
_LANDLOCK_ARCH = _X86_64 or _MACHINE in ("aarch64", "arm64", "riscv64", "ppc64le", "s390x", "loongarch64")
_CAPSET = 126 if _X86_64 else 91 if _MACHINE in ("aarch64", "arm64", "riscv64", "loongarch64") else None
# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
_NR = {
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "accept4": 288,
    "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone3": 435,
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424, "process_madvise": 440,
    "process_mrelease": 448,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
    "request_key": 249, "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "quotactl_fd": 443, "syslog": 103, "iopl": 172, "ioperm": 173, "lookup_dcookie": 212,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "mknod": 133, "mknodat": 259,
    "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260, "fchmodat": 268,
    "fchmodat2": 452, "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280, "setxattr": 188,
    "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199,
    "setxattrat": 463, "removexattrat": 466, "file_setattr": 469,
    "capset": 126, "seccomp": 317,
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
}
#: Denied outright (EPERM): processes, programs, other processes' memory, network, kernel state.
DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "process_madvise", "process_mrelease", "tkill",
    "socket", "connect", "accept", "accept4", "bind", "listen",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "quotactl_fd", "syslog", "iopl", "ioperm", "lookup_dcookie",
    "name_to_handle_at", "open_by_handle_at", "mknod", "mknodat",
    # metadata changes Landlock does not cover (modes, owners, times, extended attributes)
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
    "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr", "setxattrat", "removexattrat", "file_setattr",
)
#: Allowed only when the target (first argument) is the worker itself.
SELF_ONLY_SYSCALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = 0x7E020080  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_GET_SECCOMP = 21
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_DAC_READ_SEARCH = 2
_CAP_V3 = 0x20080522

# Landlock (include/uapi/linux/landlock.h)
_LL_CREATE, _LL_ADD, _LL_RESTRICT = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
LL_REFER, LL_TRUNCATE, LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
LL_NET_BIND_TCP, LL_NET_CONNECT_TCP = 1 << 0, 1 << 1
LL_SCOPE_ABSTRACT_UNIX_SOCKET, LL_SCOPE_SIGNAL = 1 << 0, 1 << 1

# seccomp / classic BPF
_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARGS = 0, 4, 16


def _err(where: str) -> str:
    e = ctypes.get_errno()
    return f"{where} failed ({errno.errorcode.get(e, e)}: {os.strerror(e)})"


def _sys(nr: int, *args: int | ctypes.c_void_p) -> int:
    """Raw ``syscall(nr, args...)`` with every argument passed as a full machine word."""
    ctypes.set_errno(0)
    conv = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    return int(_libc.syscall(ctypes.c_long(nr), *conv))


def _prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    ctypes.set_errno(0)
    return int(_libc.prctl(option, a2, a3, a4, a5))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 when Landlock is missing or disabled)."""
    if not _LANDLOCK_ARCH:
        return 0
    version = _sys(_LL_CREATE, ctypes.c_void_p(None), 0, LANDLOCK_CREATE_RULESET_VERSION)
    return max(0, version)


def _status() -> dict[str, str]:
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def probe() -> dict[str, str]:
    """What a worker started now could get, without sandboxing this process (a pre-flight check).

    The worker's own report (:func:`enter`) is authoritative; this only lets a
    caller refuse early, before expensive work, when a mechanism is missing.
    """
    if not _LINUX:
        return unavailable(f"the sandbox needs Linux (this is {sys.platform})")
    abi = landlock_abi()
    report = {"filesystem": f"landlock-abi-{abi}" if abi else "unavailable: Landlock is not supported or disabled"}
    seccomp_ok = _X86_64 and _prctl(PR_GET_SECCOMP) >= 0
    report["syscalls"] = ("seccomp-bpf" if seccomp_ok else
                          "unavailable: seccomp filters are defined for x86_64 only" if not _X86_64 else
                          "unavailable: seccomp is not supported")
    report["network"] = ("network namespace" if os.geteuid() == 0 or _userns_allowed() else
                         "seccomp (no socket)" if seccomp_ok else "unavailable: no namespaces and no seccomp")
    report["limits"] = "rlimits"
    report["user"] = "drop to uid 65534" if os.geteuid() == 0 else f"uid {os.getuid()} (not root)"
    return report


def _userns_allowed() -> bool:
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces",
                                                                              "0")):
        try:
            if Path(path).read_text().strip() == bad:
                return False
        except OSError:
            pass
    return True


# ------------------------------------------------------------------ worker side


def runtime_paths() -> tuple[list[str], list[str]]:
    """``(read, list_only)``: what the Python runtime needs to read, and directories it may only list.

    read: the interpreter's prefixes (installation and virtual environment), the
    other ``sys.path`` entries (e.g. added by ``.pth`` files), the packages of
    this checkout, system libraries, and the ``/proc``, ``/sys`` and ``/dev``
    entries that torch / onnxruntime / TVM consult.  list_only: this checkout's
    root (so its packages are importable without exposing its other files'
    contents, e.g. ``runs/``).
    """
    root = Path(__file__).resolve().parents[2]
    read: list[str] = []
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        read.append(p)
    read.append(os.path.dirname(os.path.realpath(sys.executable)))
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if real and real not in ("/", str(root)) and os.path.exists(real):
            read.append(real)
    list_only = [str(root)]
    try:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                read.append(entry.path)
    except OSError:
        pass
    read += ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo",
             "/etc/ld.so.cache", "/etc/localtime", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat",
             "/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/cap_last_cap", f"/proc/{os.getpid()}",
             "/sys/devices/system/cpu", "/sys/devices/system/node", "/sys/fs/cgroup",
             "/dev/urandom", "/dev/random", "/dev/zero"]
    return read, list_only


def _accessible_to(path: str, uid: int, gid: int) -> bool:
    """Can ``uid:gid`` (no capabilities) read ``path`` and search every directory above it?"""
    try:
        real = Path(path).resolve()
        st = os.stat(real)
    except OSError:
        return True  # missing: nothing to read anyway
    need = 0o4 | (0o1 if stat.S_ISDIR(st.st_mode) else 0)
    checks = [(real, need)] + [(parent, 0o1) for parent in real.parents]
    for p, bits in checks:
        try:
            s = os.stat(p)
        except OSError:
            return False
        mode = s.st_mode
        perm = (mode >> 6) & 7 if s.st_uid == uid else (mode >> 3) & 7 if s.st_gid == gid else mode & 7
        if perm & bits != bits:
            return False
    return True


class _Sandbox:
    """State of one :func:`enter` call; each step records its protection's report line."""

    def __init__(self, policy: SandboxPolicy) -> None:
        self.policy = policy
        self.report: dict[str, str] = {}
        self.read, self.list_only = runtime_paths()
        self.read += [str(Path(p)) for p in policy.read]
        self.netns = ""
        self.uid = os.getuid()  # before a user namespace hides it
        self.pid = os.getpid()
        self.ppid = os.getppid()

    # -- network namespace
    def network_namespace(self) -> None:
        """Fresh network and System V IPC namespaces: no interface up, no shared memory with others."""
        flags, user = CLONE_NEWNET | CLONE_NEWIPC, ""
        if os.geteuid() != 0:  # unprivileged: a new user namespace grants the right to make the others
            flags, user = flags | CLONE_NEWUSER, " in a user namespace"
        if _libc.unshare(flags) == 0:
            self.netns = f"fresh network and IPC namespaces{user} (no interface up)"
        elif _libc.unshare(flags & ~CLONE_NEWIPC) == 0:
            self.netns = f"fresh network namespace{user} (no interface up)"
        else:
            self.netns_error = _err("unshare(CLONE_NEWNET)")

    # -- resource limits
    def limits(self) -> None:
        p = self.policy
        parts, failed = [], []

        def setlim(name: str, res: int, soft: int, hard: int | None = None, text: str = "") -> None:
            hard = soft if hard is None else hard
            try:
                cur_soft, cur_hard = resource.getrlimit(res)
                if cur_hard != resource.RLIM_INFINITY:
                    soft, hard = min(soft, cur_hard), min(hard, cur_hard)
                resource.setrlimit(res, (soft, hard))
                parts.append(text or f"{name} {soft}")
            except (OSError, ValueError) as err:
                failed.append(f"{name} ({err})")

        setlim("file size", resource.RLIMIT_FSIZE, 0, text="file size 0")
        setlim("core", resource.RLIMIT_CORE, 0, text="core 0")
        if p.memory_mb:
            setlim("address space", resource.RLIMIT_AS, int(p.memory_mb) << 20, text=f"address space {p.memory_mb} MiB")
        if p.cpu_seconds:
            cpu = int(p.cpu_seconds)
            setlim("cpu", resource.RLIMIT_CPU, cpu, cpu + 5, text=f"cpu {cpu} s")
        setlim("open files", resource.RLIMIT_NOFILE, int(p.max_files), text=f"open files {p.max_files}")
        setlim("processes", resource.RLIMIT_NPROC, int(p.max_procs), text=f"processes {p.max_procs}")
        # past RLIMIT_FSIZE a write fails with EFBIG instead of killing the worker
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if failed:
            self.report["limits"] = "partial: " + ", ".join(parts) + "; failed: " + ", ".join(failed)
        elif not p.memory_mb or not p.cpu_seconds:
            self.report["limits"] = ", ".join(parts) + " (no " + " or ".join(
                n for n, v in (("memory", p.memory_mb), ("cpu", p.cpu_seconds)) if not v) + " limit requested)"
        else:
            self.report["limits"] = ", ".join(parts)

    # -- identity and capabilities
    def user(self) -> None:
        if self.uid != 0:
            self._drop_all_caps()  # those a new user namespace gave us
            eff = int(_status().get("CapEff", "0"), 16)
            self.report["user"] = (f"uid {self.uid} (not root), no capabilities" if not eff else
                                   f"partial: uid {self.uid} (not root), capabilities {eff:#x} left")
            return
        keep_dac = not all(_accessible_to(p, NOBODY, NOBODY) for p in self.read + self.list_only)
        keep = (1 << CAP_DAC_READ_SEARCH) if keep_dac else 0
        try:
            last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        except (OSError, ValueError):
            last = 40
        for cap in range(last + 1):
            if not keep >> cap & 1 and _prctl(PR_CAPBSET_DROP, cap) != 0 and ctypes.get_errno() != errno.EINVAL:
                self.report["user"] = "unavailable: " + _err(f"dropping capability {cap} from the bounding set")
                return
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        try:
            if keep:
                _prctl(PR_SET_KEEPCAPS, 1)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
        except OSError as err:
            self.report["user"] = f"unavailable: switching to uid {NOBODY} failed ({err})"
            return
        if not self._set_caps(keep):
            self.report["user"] = "partial: " + _err("capset") + f"; running as uid {os.getuid()}"
            return
        _prctl(PR_SET_KEEPCAPS, 0)
        st = _status()
        eff = int(st.get("CapEff", "0"), 16)
        prm = int(st.get("CapPrm", "0"), 16)
        if os.getuid() != NOBODY or os.getgid() != NOBODY or eff & ~keep or prm & ~keep:
            self.report["user"] = (f"partial: uid {os.getuid()} gid {os.getgid()}, capabilities "
                                   f"{eff:#x} left")
            return
        note = (", CAP_DAC_READ_SEARCH kept (the Python runtime or the model is not readable by uid "
                f"{NOBODY}; Landlock still bounds every read)" if keep else "")
        self.report["user"] = f"uid {NOBODY} gid {NOBODY} (nobody), no capabilities{note}"

    def _set_caps(self, keep: int) -> bool:
        if _CAPSET is None:
            return False
        header = struct.pack("=Ii", _CAP_V3, 0)
        data = struct.pack("=6I", keep, keep, 0, 0, 0, 0)  # effective, permitted, inheritable (x2 words)
        hbuf = ctypes.create_string_buffer(header, len(header))
        dbuf = ctypes.create_string_buffer(data, len(data))
        return _sys(_CAPSET, ctypes.c_void_p(ctypes.addressof(hbuf)), ctypes.c_void_p(ctypes.addressof(dbuf))) == 0

    def _drop_all_caps(self) -> None:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        self._set_caps(0)

    # -- Landlock
    def filesystem(self) -> None:
        abi = landlock_abi()
        if abi <= 0:
            self.report["filesystem"] = (f"unavailable: Landlock is not wired up for {_MACHINE} here"
                                         if not _LANDLOCK_ARCH else
                                         "unavailable: Landlock is not supported or disabled in this kernel")
            self.landlock_net = self.landlock_scope = False
            return
        fs = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
        if abi >= 2:
            fs |= LL_REFER
        if abi >= 3:
            fs |= LL_TRUNCATE
        if abi >= 5:
            fs |= LL_IOCTL_DEV
        net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP if abi >= 4 else 0
        scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL if abi >= 6 else 0
        attr = struct.pack("=QQQ", fs, net, scoped)
        size = 8 if abi < 4 else 16 if abi < 6 else 24
        abuf = ctypes.create_string_buffer(attr[:size], size)
        ruleset = _sys(_LL_CREATE, ctypes.c_void_p(ctypes.addressof(abuf)), size, 0)
        if ruleset < 0:
            self.report["filesystem"] = "unavailable: " + _err("landlock_create_ruleset")
            self.landlock_net = self.landlock_scope = False
            return
        try:
            read_dir, read_file = LL_READ_FILE | LL_READ_DIR, LL_READ_FILE
            rules = [(p, read_dir, read_file) for p in self.read] + [(p, LL_READ_DIR, 0) for p in self.list_only]
            rules.append(("/dev/null", 0, LL_READ_FILE | LL_WRITE_FILE))
            added = 0
            for path, dir_access, file_access in rules:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # absent on this machine: nothing to allow
                try:
                    access = dir_access if stat.S_ISDIR(os.fstat(fd).st_mode) else file_access
                    if not access:
                        continue
                    rule = struct.pack("=Qi", access, fd)
                    rbuf = ctypes.create_string_buffer(rule, len(rule))
                    if _sys(_LL_ADD, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.c_void_p(ctypes.addressof(rbuf)),
                            0) != 0:
                        self.report["filesystem"] = "unavailable: " + _err(f"landlock_add_rule({path})")
                        self.landlock_net = self.landlock_scope = False
                        return
                    added += 1
                finally:
                    os.close(fd)
            threads = _status().get("Threads", "1")
            if _sys(_LL_RESTRICT, ruleset, 0) != 0:
                self.report["filesystem"] = "unavailable: " + _err("landlock_restrict_self")
                self.landlock_net = self.landlock_scope = False
                return
        finally:
            os.close(ruleset)
        self.landlock_net, self.landlock_scope = bool(net), bool(scoped)
        text = f"landlock-abi-{abi}: read-only ({added} rules), no writes, no execute"
        if threads != "1":  # Landlock binds the calling thread (and its future threads) only
            text = f"partial: {text}; {threads} threads existed before the sandbox"
        self.report["filesystem"] = text

    # -- seccomp
    def syscalls(self) -> None:
        if not _X86_64:
            self.report["syscalls"] = "unavailable: seccomp filters are defined for x86_64 only"
            self.seccomp_net = False
            return
        prog = seccomp_program(self.pid)
        buf = ctypes.create_string_buffer(prog, len(prog))

        class _Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        fprog = _Fprog(len(prog) // 8, ctypes.addressof(buf))
        rc = _sys(_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.c_void_p(ctypes.addressof(fprog)))
        if rc != 0:
            self.report["syscalls"] = "unavailable: " + (_err("seccomp(SET_MODE_FILTER)") if rc < 0 else
                                                         f"seccomp could not synchronise thread {rc}")
            self.seccomp_net = False
            return
        self.seccomp_net = True
        if _status().get("Seccomp") != "2":
            self.report["syscalls"] = "partial: the seccomp filter was accepted but is not in force"
            return
        self.report["syscalls"] = (f"seccomp-bpf: no execve, fork, ptrace, sockets, io_uring, namespaces, mounts, "
                                   f"bpf, module loading or metadata changes; signals to itself only "
                                   f"({len(DENIED_SYSCALLS) + len(SELF_ONLY_SYSCALLS) + 2} calls filtered)")

    def network_report(self) -> None:
        layers = []
        if self.netns:
            layers.append(self.netns)
        if getattr(self, "seccomp_net", False):
            layers.append("seccomp: no socket/connect/bind")
        if getattr(self, "landlock_net", False):
            layers.append("landlock: no TCP")
        if getattr(self, "landlock_scope", False):
            layers.append("landlock: no abstract unix sockets or signals outside the sandbox")
        if self.netns or getattr(self, "seccomp_net", False):
            self.report["network"] = "; ".join(layers)
        else:
            why = getattr(self, "netns_error", "no network namespace")
            self.report["network"] = f"unavailable: {why}, and seccomp is unavailable" + (
                f" ({'; '.join(layers)} only)" if layers else "")


def seccomp_program(pid: int) -> bytes:
    """The classic-BPF seccomp filter (x86_64) as bytes: see the module docstring for what it denies."""
    ins: list[tuple[int, int, int, int]] = []

    def emit(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        ins.append((code, jt, jf, k & 0xFFFFFFFF))

    def ret(value: int) -> None:
        emit(_BPF_RET_K, value)

    deny = SECCOMP_RET_ERRNO | errno.EPERM
    emit(_BPF_LD_W_ABS, _OFF_ARCH)
    emit(_BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0)
    ret(SECCOMP_RET_KILL_PROCESS)
    emit(_BPF_LD_W_ABS, _OFF_NR)
    emit(_BPF_JGE_K, _X32_BIT, 0, 1)  # the x32 ABI shares the arch value: refuse it
    ret(SECCOMP_RET_KILL_PROCESS)
    for name in DENIED_SYSCALLS:
        emit(_BPF_JEQ_K, _NR[name], 0, 1)
        ret(deny)
    emit(_BPF_JEQ_K, _NR["clone3"], 0, 1)  # flags live in memory: make glibc fall back to clone
    ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    # clone: threads only (CLONE_THREAD set, no new namespace)
    emit(_BPF_JEQ_K, _NR["clone"], 0, 5)
    emit(_BPF_LD_W_ABS, _OFF_ARGS)  # low word of flags
    emit(_BPF_JSET_K, _CLONE_NAMESPACES, 2, 0)
    emit(_BPF_JSET_K, CLONE_THREAD, 0, 1)
    ret(SECCOMP_RET_ALLOW)
    ret(deny)
    # signals: only to this process (first argument == our pid, as a full 64-bit value)
    for name in SELF_ONLY_SYSCALLS:
        emit(_BPF_JEQ_K, _NR[name], 0, 6)
        emit(_BPF_LD_W_ABS, _OFF_ARGS)
        emit(_BPF_JEQ_K, pid, 0, 3)
        emit(_BPF_LD_W_ABS, _OFF_ARGS + 4)
        emit(_BPF_JEQ_K, 0, 0, 1)
        ret(SECCOMP_RET_ALLOW)
        ret(deny)
    ret(SECCOMP_RET_ALLOW)
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in ins)


def enter(policy: SandboxPolicy) -> dict[str, str]:
    """Confine this process (worker side, before any untrusted load); return the report of every protection.

    Must run while the process has a single thread (Landlock binds the calling
    thread and the threads it starts later).  Never raises for a missing
    mechanism: what could not be set up is reported as unavailable.
    """
    if not policy.enabled:
        return unavailable("sandbox disabled by the caller")
    if not _LINUX:
        return unavailable(f"the sandbox needs Linux (this is {sys.platform})")
    box = _Sandbox(policy)
    box.network_namespace()
    box.limits()
    box.user()
    if os.getppid() != box.ppid:  # the parent died while we were switching users
        os._exit(1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid switch: set it now
    if os.getppid() != box.ppid:
        os._exit(1)
    if _prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
        nnp = _err("prctl(PR_SET_NO_NEW_PRIVS)")
        box.report["filesystem"] = box.report["syscalls"] = f"unavailable: {nnp}"
        box.landlock_net = box.landlock_scope = box.seccomp_net = False
    else:
        box.filesystem()
        box.syscalls()
    box.network_report()
    if not box.report.get("filesystem", "").startswith("unavailable"):
        # Nothing can be written any more, so Python's probe for a writable temporary directory
        # (tempfile.gettempdir) would fail, and torch creates its compile cache directory when
        # torch._dynamo is imported (torch.export.load does): name existing directories without
        # probing; writing into them still fails.
        tempfile.tempdir = tempfile.tempdir or os.environ.get("TMPDIR") or "/tmp"
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.tempdir)
    return {name: box.report.get(name, "unavailable: not set up") for name in PROTECTIONS}


def enter_from_environment() -> tuple[dict[str, str], SandboxPolicy | None]:
    """Worker side: read the policy from :data:`ENV_VAR` (removing it) and :func:`enter` it.

    Without the variable nothing is confined and every protection reads
    ``unavailable: no sandbox policy``.
    """
    text = os.environ.pop(ENV_VAR, None)
    if text is None:
        return unavailable("no sandbox policy (worker started without one)"), None
    try:
        policy = SandboxPolicy.from_json(text)
    except (ValueError, TypeError) as err:
        return unavailable(f"malformed sandbox policy ({err})"), SandboxPolicy(require=True)
    return enter(policy), policy
