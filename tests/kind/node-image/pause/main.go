// pause is the process that holds a pod's namespaces open (the sandbox
// container the kubelet asks the runtime for). It does nothing but wait:
// it reaps any orphan that the pod's shared PID namespace hands it and
// leaves on SIGINT or SIGTERM, so the sandbox stops as soon as asked.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		os.Stderr.WriteString("pause: warning: not PID 1, orphans are not reaped here\n")
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Several children may have exited for one SIGCHLD.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
