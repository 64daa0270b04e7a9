/* A bench/cpg.py worker in C on corosync's libcpg: the corosync baseline without Python in its clients.
 *
 * It speaks the Python worker's protocol: JSON lines on stdin ({"cmd": "run", "mode": "throughput" |
 * "latency", "case": N, "senders": N, "size": N, "send": true|false, "seconds": S, "count": N,
 * "rate": latency messages per second} or
 * {"cmd": "quit"}), JSON lines on stdout ({"ready": pid}, then per run {"delivered", "sent", "seconds",
 * "rtts", "complete"}), and sends the same messages (header <BIIIQ: kind, case, pid, seq, t_ns, then
 * padding), so its figures compare with the Python workers' case by case.
 *
 * bench/cpg.py compiles it (cc -O2 ... -l:libcpg.so.4) when a C compiler is there; the declarations
 * below are those of corosync's public header corosync/cpg.h, so the -dev package is not needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t cpg_handle_t;
typedef int cs_error_t;
struct cpg_name { uint32_t length; char value[128]; };
struct cpg_address { uint32_t nodeid; uint32_t pid; uint32_t reason; };
typedef void (*cpg_deliver_fn_t)(cpg_handle_t, const struct cpg_name *, uint32_t, uint32_t, void *, size_t);
typedef void (*cpg_confchg_fn_t)(cpg_handle_t, const struct cpg_name *, const struct cpg_address *, size_t,
                                 const struct cpg_address *, size_t, const struct cpg_address *, size_t);
typedef struct { cpg_deliver_fn_t cpg_deliver_fn; cpg_confchg_fn_t cpg_confchg_fn; } cpg_callbacks_t;
cs_error_t cpg_initialize(cpg_handle_t *handle, cpg_callbacks_t *callbacks);
cs_error_t cpg_fd_get(cpg_handle_t handle, int *fd);
cs_error_t cpg_dispatch(cpg_handle_t handle, int dispatch_types);
cs_error_t cpg_join(cpg_handle_t handle, const struct cpg_name *group);
cs_error_t cpg_mcast_joined(cpg_handle_t handle, int guarantee, const struct iovec *iovec, unsigned int iov_len);
cs_error_t cpg_finalize(cpg_handle_t handle);

enum { CS_OK = 1, CS_ERR_TRY_AGAIN = 6, CS_DISPATCH_ALL = 2, CPG_TYPE_AGREED = 1 };
enum { DATA = 0, FIN = 1, HDR = 21, MAX_RTTS = 100000, MAX_SENDERS = 64 };
#define GROUP "bench-cpg"
#define CASE_TIMEOUT_S 120.0

static cpg_handle_t handle;
static int cpg_fd = -1;
static uint32_t my_pid;
static size_t members;
static struct {
    uint32_t case_id;
    uint32_t fins[MAX_SENDERS];
    size_t nfins;
    uint64_t delivered;
    double t_last;
    int64_t waiting;
    uint64_t rtts[MAX_RTTS];
    size_t nrtts;
} st;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid, uint32_t pid, void *msg, size_t len) {
    (void)h; (void)g; (void)nodeid; (void)pid;
    if (len < HDR) return;
    const uint8_t *m = msg;
    uint32_t case_id, sender, seq;
    uint64_t t_ns;
    memcpy(&case_id, m + 1, 4);
    memcpy(&sender, m + 5, 4);
    memcpy(&seq, m + 9, 4);
    memcpy(&t_ns, m + 13, 8);
    if (case_id != st.case_id) return;
    if (m[0] == FIN) {
        for (size_t i = 0; i < st.nfins; i++)
            if (st.fins[i] == sender) return;
        if (st.nfins < MAX_SENDERS) st.fins[st.nfins++] = sender;
        return;
    }
    st.delivered++;
    st.t_last = now_s();
    if (sender == my_pid && (int64_t)seq == st.waiting) {
        if (st.nrtts < MAX_RTTS) st.rtts[st.nrtts++] = now_ns() - t_ns;
        st.waiting = -1;
    }
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *g, const struct cpg_address *m, size_t nm,
                       const struct cpg_address *l, size_t nl, const struct cpg_address *j, size_t nj) {
    (void)h; (void)g; (void)m; (void)l; (void)nl; (void)j; (void)nj;
    members = nm;
}

static void die(const char *what, cs_error_t err) {
    fprintf(stderr, "cpg_worker: %s failed: cs_error_t %d\n", what, err);
    exit(1);
}

/* waits up to timeout_s for events and dispatches those that came */
static void take_events(double timeout_s) {
    struct pollfd p = {.fd = cpg_fd, .events = POLLIN};
    int ms = timeout_s <= 0 ? 0 : (int)(timeout_s * 1000 + 0.999);
    if (poll(&p, 1, ms) > 0) {
        cs_error_t err = cpg_dispatch(handle, CS_DISPATCH_ALL);
        if (err != CS_OK) die("cpg_dispatch", err);
    }
}

static void send_msg(uint8_t kind, uint32_t case_id, uint32_t seq, const uint8_t *pad, size_t pad_len) {
    uint8_t hdr[HDR];
    uint64_t t = now_ns();
    hdr[0] = kind;
    memcpy(hdr + 1, &case_id, 4);
    memcpy(hdr + 5, &my_pid, 4);
    memcpy(hdr + 9, &seq, 4);
    memcpy(hdr + 13, &t, 8);
    struct iovec iov[2] = {{hdr, HDR}, {(void *)pad, pad_len}};
    for (;;) {
        cs_error_t err = cpg_mcast_joined(handle, CPG_TYPE_AGREED, iov, pad_len ? 2 : 1);
        if (err == CS_OK) return;
        if (err != CS_ERR_TRY_AGAIN) die("cpg_mcast_joined", err);
        take_events(0.002);
    }
}

/* the number after "key": in a JSON line of bench/cpg.py (flat, keys unique); -1 if absent */
static double json_num(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(line, pat);
    if (!p) return -1;
    p += strlen(pat);
    if (strncmp(p, "true", 4) == 0) return 1;
    if (strncmp(p, "false", 5) == 0) return 0;
    return strtod(p, NULL);
}

int main(void) {
    cpg_callbacks_t cb = {on_deliver, on_confchg};
    cs_error_t err;
    double deadline = now_s() + 30;
    my_pid = (uint32_t)getpid();
    while ((err = cpg_initialize(&handle, &cb)) != CS_OK) {
        if (now_s() > deadline) die("cpg_initialize (is corosync running in this network namespace?)", err);
        usleep(50000);
    }
    if ((err = cpg_fd_get(handle, &cpg_fd)) != CS_OK) die("cpg_fd_get", err);
    struct cpg_name group = {.length = sizeof GROUP - 1};
    memcpy(group.value, GROUP, sizeof GROUP - 1);
    while ((err = cpg_join(handle, &group)) != CS_OK) {
        if (err != CS_ERR_TRY_AGAIN || now_s() > deadline) die("cpg_join", err);
        usleep(20000);
    }
    while (members < 3) {
        if (now_s() > deadline) { fprintf(stderr, "cpg_worker: the group never reached 3 members\n"); return 1; }
        take_events(0.1);
    }
    printf("{\"ready\": %u}\n", my_pid);
    fflush(stdout);

    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        if (strstr(line, "\"quit\"")) break;
        uint32_t case_id = (uint32_t)json_num(line, "case");
        size_t nsend = (size_t)json_num(line, "senders");
        size_t size = (size_t)json_num(line, "size");
        int sending = json_num(line, "send") == 1;
        double seconds = json_num(line, "seconds");
        long count = (long)json_num(line, "count");
        double rate = json_num(line, "rate");
        int throughput = strstr(line, "\"throughput\"") != NULL;
        size_t pad_len = size > HDR ? size - HDR : 0;
        uint8_t *pad = calloc(1, pad_len ? pad_len : 1);
        st.case_id = case_id; st.nfins = 0; st.delivered = 0; st.t_last = 0; st.waiting = -1; st.nrtts = 0;
        double t0 = now_s(), end = t0 + CASE_TIMEOUT_S;
        uint32_t sent = 0;
        if (sending && throughput) {
            double stop_at = t0 + seconds;
            while (now_s() < stop_at) {
                take_events(0);
                send_msg(DATA, case_id, sent++, pad, pad_len);
            }
        } else if (sending) {
            for (long seq = 0; seq < count; seq++) {
                double slot = t0 + (double)seq / rate, left;
                while ((left = slot - now_s()) > 0) take_events(left);
                st.waiting = seq;
                send_msg(DATA, case_id, (uint32_t)seq, pad, pad_len);
                sent++;
                while (st.waiting != -1 && now_s() < end) take_events(0.5);
            }
        }
        if (sending) send_msg(FIN, case_id, sent, pad, 0);
        while (st.nfins < nsend && now_s() < end) take_events(0.1);
        printf("{\"delivered\": %llu, \"sent\": %u, \"seconds\": %.6f, \"complete\": %s, \"rtts\": [",
               (unsigned long long)st.delivered, sent, (st.t_last > 0 ? st.t_last : t0) - t0,
               st.nfins >= nsend ? "true" : "false");
        for (size_t i = 0; i < st.nrtts; i++) printf(i ? ", %llu" : "%llu", (unsigned long long)st.rtts[i]);
        printf("]}\n");
        fflush(stdout);
        free(pad);
    }
    cpg_finalize(handle);
    return 0;
}
