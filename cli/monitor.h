/* monitor.h -- `maskloss monitor`: a running server's monitors over HTTP. */
#ifndef MONITOR_H
#define MONITOR_H

/* Runs `maskloss monitor ...`; argv holds the arguments after "monitor" (argv[0] is the
 * command: create, observe, show, series, list or delete). Returns the exit status. */
int maskloss_monitor(int argc, char **argv);

#endif /* MONITOR_H */
