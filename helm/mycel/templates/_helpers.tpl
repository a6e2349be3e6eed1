{{/*
Labels on every object of the chart.
*/}}
{{- define "mycel.labels" -}}
app.kubernetes.io/name: mycel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mycel
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
The controller's Pods: selector labels (never change after install).
*/}}
{{- define "mycel.controllerSelector" -}}
app.kubernetes.io/name: mycel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
An image reference from images.<name>: by digest when one is set, else by
tag (appVersion when empty).
*/}}
{{- define "mycel.image" -}}
{{- $img := index .root.Values.images .name -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end }}

{{/*
The CA Secret's name, after checking that exactly one CA source is chosen.
*/}}
{{- define "mycel.caSecret" -}}
{{- if and .Values.ca.generate .Values.ca.existingSecret -}}
{{- fail "ca.generate=true and ca.existingSecret exclude each other: set ca.generate=false to use your own CA Secret" -}}
{{- end -}}
{{- if not (or .Values.ca.generate .Values.ca.existingSecret) -}}
{{- fail "no CA: set ca.generate=true, or ca.existingSecret to a Secret with tls.crt, tls.key and ca.crt" -}}
{{- end -}}
{{- default "mycel-ca" .Values.ca.existingSecret -}}
{{- end }}

{{/*
The mesh's OTLP export as JSON, {"endpoint", "protocol"}, or {} when no
endpoint is set: tracing.otlpEndpoint and tracing.protocol, or their old
names proxy.tracing.otlpEndpoint and proxy.tracing.protocol; a key and its
old name set to different values fail, naming both. Used by the controller
(its env) and the injector (every proxy's).
*/}}
{{- define "mycel.otlp" -}}
{{- $new := default dict .Values.tracing -}}
{{- $old := default dict (default dict .Values.proxy).tracing -}}
{{- $out := dict -}}
{{- range $key := list "otlpEndpoint" "protocol" -}}
{{- $a := toString (default "" (get $new $key)) -}}
{{- $b := toString (default "" (get $old $key)) -}}
{{- if and $a $b (ne $a $b) -}}
{{- fail (printf "tracing.%s=%q and proxy.tracing.%s=%q differ: proxy.tracing.%s is the old name of tracing.%s (the controller's and every proxy's); set only tracing.%s" $key $a $key $b $key $key $key) -}}
{{- end -}}
{{- $_ := set $out $key (default $b $a) -}}
{{- end -}}
{{- if $out.otlpEndpoint -}}
{{- toJson (dict "endpoint" $out.otlpEndpoint "protocol" (default "http/protobuf" $out.protocol)) -}}
{{- else -}}
{}
{{- end -}}
{{- end }}

{{/*
Namespaces the webhook never sees: kube-system and the mesh's own.
*/}}
{{- define "mycel.protectedNamespaces" -}}
{{- list "kube-system" "mycel-system" .Release.Namespace | uniq | toJson -}}
{{- end }}

{{/*
A container's resources from {requests: {cpu, memory}, limits: {...}}, as
the injector's camelCase keys.
*/}}
{{- define "mycel.injectResources" -}}
{{- $r := default dict .requests -}}
{{- $l := default dict .limits -}}
{{- $out := dict -}}
{{- with $r.cpu }}{{ $_ := set $out "cpuRequest" (toString .) }}{{ end -}}
{{- with $l.cpu }}{{ $_ := set $out "cpuLimit" (toString .) }}{{ end -}}
{{- with $r.memory }}{{ $_ := set $out "memoryRequest" (toString .) }}{{ end -}}
{{- with $l.memory }}{{ $_ := set $out "memoryLimit" (toString .) }}{{ end -}}
{{- toJson $out -}}
{{- end }}
