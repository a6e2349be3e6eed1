# mycel-controller: one static binary, nothing else. Built by images/build.sh,
# whose context is target/image/context/controller.
#
# No CA certificates: the controller talks only to the Kubernetes API server,
# whose CA comes from the service-account volume, and to proxies, whose
# roots are its own CA.
FROM scratch
COPY mycel-controller /usr/local/bin/mycel-controller
# runc resolves a bare command name through PATH; scratch sets none.
ENV PATH=/usr/local/bin
# The chart's runAsUser: any non-root UID that is not the proxy's 1337.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mycel-controller"]
