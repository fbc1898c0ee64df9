{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "macula.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the
release name already contains it.
*/}}
{{- define "macula.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the headless Service (DNS records for every pod, ready or not). */}}
{{- define "macula.headlessName" -}}
{{- printf "%s-headless" (include "macula.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "macula.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "macula.labels" -}}
helm.sh/chart: {{ include "macula.chart" . }}
{{ include "macula.selectorLabels" . }}
app.kubernetes.io/component: {{ .Values.mode }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: macula
{{- end }}

{{/* Labels that select this release's pods (immutable once installed). */}}
{{- define "macula.selectorLabels" -}}
app.kubernetes.io/name: {{ include "macula.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "macula.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secret holding tls.crt, tls.key and ca.crt (production mode). */}}
{{- define "macula.tlsSecret" -}}
{{- default (printf "%s-tls" (include "macula.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/*
The configuration as a dict: generated from the values, then .Values.config
merged over it. Rendered to TOML by "macula.toml.table".
*/}}
{{- define "macula.configDict" -}}
{{- $listen := printf "0.0.0.0:%d" (int .Values.service.port) }}
{{- $admin := printf "0.0.0.0:%d" (int .Values.admin.port) }}
{{- $cfg := dict }}
{{- if eq .Values.mode "bridge" }}
{{- $bridge := dict "listen" $listen "admin_listen" $admin "realms" .Values.realms "level" .Values.level }}
{{- if .Values.fleet.enabled }}
{{- $dns := printf "%s.%s.svc.%s:%d" (include "macula.headlessName" .) .Release.Namespace .Values.fleet.clusterDomain (int .Values.service.port) }}
{{- $fleet := dict "name" (default (include "macula.fullname" .) .Values.fleet.name) "dns" $dns "weight" .Values.fleet.weight "drain_grace_ms" .Values.fleet.drainGraceMs }}
{{- $_ := set $bridge "fleet" $fleet }}
{{- end }}
{{- $_ := set $cfg "bridge" $bridge }}
{{- else }}
{{- $node := dict "listen" $listen "admin_listen" $admin "realm" .Values.node.realm "cluster" .Values.node.cluster }}
{{- $_ := set $node "uplink" (required "node.uplink (the bridge's host:port) is required when mode is node" .Values.node.uplink) }}
{{- with .Values.node.uplinkServerName }}
{{- $_ := set $node "uplink_server_name" . }}
{{- end }}
{{- $_ := set $cfg "node" $node }}
{{- end }}
{{- $tls := dict "mode" .Values.tls.mode }}
{{- if eq .Values.tls.mode "production" }}
{{- $_ := set $tls "cert_file" "/etc/macula/tls/tls.crt" }}
{{- $_ := set $tls "key_file" "/etc/macula/tls/tls.key" }}
{{- $_ := set $tls "ca_file" "/etc/macula/tls/ca.crt" }}
{{- end }}
{{- $_ := set $cfg "tls" $tls }}
{{- $_ := set $cfg "log" (dict "level" "info" "json" true) }}
{{- with .Values.rate }}
{{- $_ := set $cfg "rate" (dict "link" .link "client" .client) }}
{{- end }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy (default (dict) .Values.config)) }}
{{- toJson $cfg }}
{{- end }}

{{/*
Render one TOML value. Helm reads every number in values as a float, so a
whole-number float is written as an integer (the config has no fractional keys).
*/}}
{{- define "macula.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}
{{- toJson $v }}
{{- else if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (float64 (int64 $v)) (float64 $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}
{{- $v }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $v }}
{{- $items = append $items (include "macula.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "invalid" $v }}
{{- fail "macula config: null values cannot be written to TOML" }}
{{- else }}
{{- fail (printf "macula config: cannot write a %s to TOML" (kindOf $v)) }}
{{- end }}
{{- end }}

{{/*
Render a TOML table: its plain keys, then each sub-table under a [dotted.header].
Argument: dict "prefix" "<dotted path or empty>" "table" <map>.
*/}}
{{- define "macula.toml.table" -}}
{{- $prefix := .prefix }}
{{- $table := .table }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if not (kindIs "map" $v) }}
{{ $k }} = {{ include "macula.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if kindIs "map" $v }}
{{- $path := ternary $k (printf "%s.%s" $prefix $k) (eq $prefix "") }}

[{{ $path }}]
{{- include "macula.toml.table" (dict "prefix" $path "table" $v) }}
{{- end }}
{{- end }}
{{- end }}
