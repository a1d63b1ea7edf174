/*
 * The test node's pod sandbox ("pause") program, and the stand-in `java` the
 * pod-scope test runs inside an ordinary pod: it sleeps until SIGTERM or
 * SIGINT and reaps any child re-parented to it (it is pid 1 of the pod's pid
 * namespace). Built static, so it runs from an empty image:
 *   cc -static -Os -o pause tests/kube/pause.c
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = quit;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) {
        pause();
    }
    return EXIT_SUCCESS;
}
