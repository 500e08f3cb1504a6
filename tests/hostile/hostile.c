/* A hostile shared library for tests/test_sandbox.py: what a stolen-model "suspect" could ship.
 *
 * Its load-time constructor (run by dlopen, before the runtime ever looks at the
 * model) performs one attempt chosen at compile time:
 *
 *   -DACTION=try_read   read the owner's model file   (-DSECRET="path")
 *   -DACTION=try_write  overwrite a canary, create a file (-DCANARY="path" -DNEWFILE="path")
 *   -DACTION=try_tcp    connect to 127.0.0.1:PORT and send "pwned" (-DPORT=n)
 *   -DACTION=try_spawn  fork + exec /bin/sh, then posix_spawn (-DMARKER="path" written by the child)
 *   -DACTION=try_meta   chmod and touch the canary (metadata calls that Landlock does not cover)
 *   -DACTION=try_parent signal the parent (signal 0: a probe) and read its environment (its secrets)
 *   -DACTION=try_alloc  allocate and touch 64 MiB blocks without bound
 *   -DACTION=try_loop   spin forever
 *   -DACTION=try_all    every attempt above but alloc and loop, in turn
 *
 * -DDEFERRED_MS=n runs the attempt in a thread started by the constructor, n ms
 * later (while the model is being queried).  -DEXIT_AFTER=n ends the process with
 * exit code n right after the attempt, so its report lines (stderr, one per
 * attempt: "HOSTILE <what>: SUCCEEDED ..." or "HOSTILE <what>: blocked (...)")
 * reach the caller in the "worker died" message.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void report(const char *what, int ok, int err, const char *extra) {
    if (ok)
        fprintf(stderr, "HOSTILE %s: SUCCEEDED %s\n", what, extra ? extra : "");
    else
        fprintf(stderr, "HOSTILE %s: blocked (errno %d: %s)\n", what, err, strerror(err));
    fflush(stderr);
}

#ifdef SECRET
static void try_read(void) {
    char buf[128] = {0};
    int fd = open(SECRET, O_RDONLY);
    ssize_t n;
    if (fd < 0) {
        report("read", 0, errno, NULL);
        fd = open("/proc/self/root" SECRET, O_RDONLY);
        if (fd < 0) { report("read via /proc/self/root", 0, errno, NULL); return; }
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        report("read via /proc/self/root", n > 0, errno, buf);
        return;
    }
    n = read(fd, buf, sizeof buf - 1);
    int err = errno;
    close(fd);
    if (n < 0) { report("read", 0, err, NULL); return; }
    for (ssize_t i = 0; i < n; i++) if (buf[i] == '\n') buf[i] = ' ';
    report("read", 1, 0, buf);
    /* the same file through the /proc/self/root magic link */
    fd = open("/proc/self/root" SECRET, O_RDONLY);
    if (fd < 0) { report("read via /proc/self/root", 0, errno, NULL); return; }
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    report("read via /proc/self/root", n > 0, errno, "");
}
#endif

#ifdef CANARY
static void try_write(void) {
    int fd = open(CANARY, O_WRONLY | O_TRUNC);
    if (fd < 0) report("write canary", 0, errno, NULL);
    else {
        ssize_t n = write(fd, "pwned\n", 6);
        int err = errno;
        close(fd);
        if (n == 6) report("write canary", 1, 0, CANARY); else report("write canary", 0, err, NULL);
    }
    fd = open(NEWFILE, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { report("create file", 0, errno, NULL); return; }
    ssize_t n = write(fd, "pwned\n", 6);
    int err = errno;
    close(fd);
    if (n == 6) report("create file", 1, 0, NEWFILE); else report("create file (write)", 0, err, NULL);
}
#endif

#ifdef CANARY
static void try_meta(void) {
    if (chmod(CANARY, 0666) != 0) report("chmod", 0, errno, NULL); else report("chmod", 1, 0, CANARY);
    if (utimes(CANARY, NULL) != 0) report("utime", 0, errno, NULL); else report("utime", 1, 0, CANARY);
}
#endif

__attribute__((unused)) static void try_parent(void) {
    pid_t parent = getppid();
    if (kill(parent, 0) != 0) report("signal parent", 0, errno, NULL); else report("signal parent", 1, 0, "");
    char path[64], buf[64] = {0};
    snprintf(path, sizeof path, "/proc/%d/environ", (int)parent);
    int fd = open(path, O_RDONLY);
    if (fd < 0) { report("read parent environment", 0, errno, NULL); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    for (ssize_t i = 0; i < n; i++) if (buf[i] == 0) buf[i] = ' ';
    report("read parent environment", n > 0, errno, buf);
}

#ifdef PORT
static void try_tcp(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { report("tcp", 0, errno, NULL); return; }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(PORT);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) { report("tcp", 0, errno, NULL); close(s); return; }
    ssize_t n = send(s, "pwned\n", 6, 0);
    close(s);
    report("tcp", n == 6, errno, "connected to 127.0.0.1");
}
#endif

#ifdef MARKER
static void try_spawn(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "echo pwned > %s", MARKER);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid < 0) report("fork", 0, errno, NULL);
    else {
        int status = 0;
        waitpid(pid, &status, 0);
        report("fork", 1, 0, "child ran");
    }
    char *argv[] = {"sh", "-c", cmd, NULL};
    int rc = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
    if (rc != 0) report("posix_spawn", 0, rc, NULL);
    else {
        int status = 0;
        waitpid(pid, &status, 0);
        report("posix_spawn", 1, 0, "child ran");
    }
}
#endif

__attribute__((unused)) static void try_alloc(void) {
    size_t mib = 0;
    for (;;) {
        char *p = malloc((size_t)64 << 20);
        if (!p) break;
        memset(p, 1, (size_t)64 << 20);
        mib += 64;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "%zu MiB before malloc failed", mib);
    fprintf(stderr, "HOSTILE alloc: stopped after %s\n", extra);
    fflush(stderr);
}

__attribute__((unused)) static void try_loop(void) {
    volatile unsigned long spin = 0;
    for (;;) spin++;
}

__attribute__((unused)) static void try_all(void) {
#ifdef SECRET
    try_read();
#endif
#ifdef CANARY
    try_write();
#endif
#ifdef PORT
    try_tcp();
#endif
#ifdef MARKER
    try_spawn();
#endif
#ifdef CANARY
    try_meta();
#endif
    try_parent();
}

#ifndef ACTION
#define ACTION try_all
#endif

static void attempt(void) {
    ACTION();
#ifdef EXIT_AFTER
    _exit(EXIT_AFTER);
#endif
}

#ifdef DEFERRED_MS
static void *later(void *arg) {
    (void)arg;
    struct timespec ts = {DEFERRED_MS / 1000, (DEFERRED_MS % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    attempt();
    return NULL;
}
#endif

__attribute__((constructor)) static void hostile_init(void) {
#ifdef DEFERRED_MS
    pthread_t t;
    if (pthread_create(&t, NULL, later, NULL) != 0) report("thread", 0, errno, NULL);
    else pthread_detach(t);
#else
    attempt();
#endif
}

/* a harmless exported symbol, so the library looks like something */
int hostile_library_version(void) { return 1; }
