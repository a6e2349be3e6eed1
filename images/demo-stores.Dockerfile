# mycel-demo-stores: the demo shop's stores (PostgreSQL, Redis, NATS with
# JetStream), started the one way the local demo starts them too:
#   mycel-demo store postgres|redis|nats --dir /data/<name> --listen 0.0.0.0:<port>
# Built by images/build.sh, whose context is target/images/context/stores:
# `root/` holds the three servers from Debian packages with the libraries
# they load, and dash as /bin/sh (initdb starts the server through
# popen(3)); mycel-demo is static.
FROM scratch
COPY root/ /
COPY mycel-demo /usr/local/bin/mycel-demo
ENV PATH=/usr/local/bin:/usr/bin:/usr/sbin
# PostgreSQL will not run as root. 999 is `stores` in the image's passwd,
# and not the proxy's 1337, whose traffic the capture rules let through.
USER 999:999
ENTRYPOINT ["/usr/local/bin/mycel-demo"]
