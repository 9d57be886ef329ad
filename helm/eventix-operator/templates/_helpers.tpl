{{/*
Names. Kubernetes names are cut to 63 characters (DNS label); suffixed names leave room for
the suffix.
*/}}
{{- define "eventix-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "eventix-operator.fullname" -}}
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

{{/* "<fullname>-<suffix>", the full name cut so that the whole stays within 63. */}}
{{- define "eventix-operator.componentName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "eventix-operator.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "eventix-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "eventix-operator.labels" -}}
helm.sh/chart: {{ include "eventix-operator.chart" . }}
{{ include "eventix-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventix
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "eventix-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventix-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector labels of one component: (list $ "operator"). */}}
{{- define "eventix-operator.componentLabels" -}}
{{ include "eventix-operator.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "eventix-operator.componentSelectorLabels" -}}
{{ include "eventix-operator.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
ServiceAccount names: (list $ "workers" "worker") reads .Values.workers.serviceAccount and
defaults to "<fullname>-worker"; the suffix defaults to the values key.
*/}}
{{- define "eventix-operator.serviceAccountName" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $suffix := $key }}
{{- if gt (len .) 2 }}
{{- $suffix = index . 2 }}
{{- end }}
{{- $sa := (index $root.Values $key).serviceAccount }}
{{- if $sa.create }}
{{- default (include "eventix-operator.componentName" (list $root $suffix)) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* Object names of the parts. */}}
{{- define "eventix-operator.operatorName" -}}
{{- include "eventix-operator.componentName" (list . "operator") }}
{{- end }}

{{- define "eventix-operator.workerName" -}}
{{- include "eventix-operator.componentName" (list . "worker") }}
{{- end }}

{{- define "eventix-operator.apiName" -}}
{{- include "eventix-operator.componentName" (list . "api") }}
{{- end }}

{{- define "eventix-operator.migrationName" -}}
{{- include "eventix-operator.componentName" (list . "migrate") }}
{{- end }}

{{/* The kopf peering object the operator replicas share. */}}
{{- define "eventix-operator.peeringName" -}}
{{- default (include "eventix-operator.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/*
Namespaces the operator watches: empty means the whole cluster; otherwise the listed ones
plus the release namespace (where the chart's own worker pool lives), without duplicates.
*/}}
{{- define "eventix-operator.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- uniq (prepend .Values.operator.watchNamespaces .Release.Namespace) | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/* Namespaces where the operator may scale Deployments: a list, or ["*"] for all. */}}
{{- define "eventix-operator.scaleNamespaces" -}}
{{- $extra := .Values.operator.rbac.scaleNamespaces }}
{{- if has "*" $extra }}
{{- list "*" | toJson }}
{{- else }}
{{- $watched := include "eventix-operator.watchNamespaces" . | fromJsonArray }}
{{- uniq (concat (list .Release.Namespace) $watched $extra) | toJson }}
{{- end }}
{{- end }}

{{/* Images: (list $ .Values.workers.image) falls back to .Values.image field by field. */}}
{{- define "eventix-operator.image" -}}
{{- $root := index . 0 }}
{{- $override := index . 1 }}
{{- $repository := default $root.Values.image.repository $override.repository }}
{{- $digest := default $root.Values.image.digest $override.digest }}
{{- if and $override.repository (not $override.digest) }}
{{- $digest = "" }}
{{- end }}
{{- $tag := default (default $root.Chart.AppVersion $root.Values.image.tag) $override.tag }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "eventix-operator.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The database URL: the Secret the chart makes, or the user's. */}}
{{- define "eventix-operator.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- include "eventix-operator.componentName" (list . "database") }}
{{- end }}
{{- end }}

{{- define "eventix-operator.checkDatabase" -}}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "database: set either database.url (the chart makes a Secret) or database.existingSecret, not both" }}
{{- end }}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "database: set database.url (postgresql://user:password@host:5432/db) or database.existingSecret (a Secret with the URL under database.secretKey)" }}
{{- end }}
{{- if and .Values.database.existingSecret (or .Values.database.listenUrl .Values.database.readUrl) }}
{{- fail "database: with database.existingSecret, put the listen and read URLs in that Secret (under database.listenSecretKey and database.readSecretKey), not in database.listenUrl or database.readUrl" }}
{{- end }}
{{- end }}

{{/*
The REST API is never served without a token by accident: a token Secret, or an explicit
allowAnonymous, and then only on a ClusterIP Service and without an Ingress. (The chart does not make a token
itself: under `helm template`, as Argo CD renders, `lookup` finds nothing, so a generated
token would change at every render.)
*/}}
{{- define "eventix-operator.checkApiAuth" -}}
{{- if not .Values.api.auth.existingSecret }}
{{- if not .Values.api.auth.allowAnonymous }}
{{- fail (printf "api.auth: the REST API needs a bearer token: create a Secret with one (kubectl -n %s create secret generic eventix-api-token --from-literal=token=$(openssl rand -hex 32)) and set api.auth.existingSecret=eventix-api-token, or set api.auth.allowAnonymous=true to serve it without authentication (ClusterIP only)" .Release.Namespace) }}
{{- end }}
{{- if ne .Values.api.service.type "ClusterIP" }}
{{- fail (printf "api.auth.allowAnonymous: an API without authentication is served on a ClusterIP Service only, not a %s one: set api.auth.existingSecret, or api.service.type=ClusterIP" .Values.api.service.type) }}
{{- end }}
{{- if .Values.api.ingress.enabled }}
{{- fail "api.auth.allowAnonymous: an API without authentication is not exposed through an Ingress, not even its dashboard (anyone reaching it could act): set api.auth.existingSecret, or api.ingress.enabled=false" }}
{{- end }}
{{- end }}
{{- end }}

{{/* DATABASE_URL from the chart's Secret or the user's: (list $ secretName). */}}
{{- define "eventix-operator.databaseEnv" -}}
{{- $root := index . 0 }}
{{- include "eventix-operator.checkDatabase" $root -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 }}
      key: {{ $root.Values.database.secretKey }}
{{- /* Optional keys: a Secret without them leaves the variables unset. */}}
- name: EVENTIX_LISTEN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 }}
      key: {{ $root.Values.database.listenSecretKey }}
      optional: true
- name: EVENTIX_READ_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 }}
      key: {{ $root.Values.database.readSecretKey }}
      optional: true
{{- end }}

{{/* The settings every eventix process reads. */}}
{{- define "eventix-operator.settingsEnv" -}}
- name: EVENTIX_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: EVENTIX_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: EVENTIX_MAX_PAYLOAD_BYTES
  value: {{ .Values.config.maxPayloadBytes | int64 | quote }}
- name: EVENTIX_DB_POOL_SIZE
  value: {{ .Values.config.dbPoolSize | int64 | quote }}
- name: EVENTIX_DB_MAX_OVERFLOW
  value: {{ .Values.config.dbMaxOverflow | int64 | quote }}
{{- if .Values.config.dbMaxConnections }}
- name: EVENTIX_DB_MAX_CONNECTIONS
  value: {{ .Values.config.dbMaxConnections | int64 | quote }}
{{- end }}
- name: EVENTIX_DB_PREPARED_STATEMENTS
  value: {{ .Values.config.dbPreparedStatements | toString | quote }}
- name: EVENTIX_POLL_ONLY_INTERVAL
  value: {{ include "eventix-operator.number" .Values.config.pollOnlyInterval | quote }}
- name: EVENTIX_OPERATOR_LEASE_SECONDS
  value: {{ include "eventix-operator.number" .Values.config.operatorLeaseSeconds | quote }}
{{- end }}

{{/* Environment of the long-running containers. */}}
{{- define "eventix-operator.env" -}}
{{ include "eventix-operator.databaseEnv" (list . (include "eventix-operator.databaseSecretName" .)) }}
{{ include "eventix-operator.settingsEnv" . }}
{{- end }}

{{/* A number for an environment variable: whole numbers without an exponent. */}}
{{- define "eventix-operator.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
A container's env: (list $ builtinYAML componentExtraEnv). The built-in entries, then the global
extraEnv, then the component's; a later entry of the same name replaces an earlier one in its
place (the API server rejects duplicate names).
*/}}
{{- define "eventix-operator.envList" -}}
{{- $root := index . 0 }}
{{- $entries := concat (index . 1 | fromYamlArray) $root.Values.extraEnv (index . 2) }}
{{- $order := list }}
{{- $byName := dict }}
{{- range $entries }}
{{- if not (hasKey $byName .name) }}
{{- $order = append $order .name }}
{{- end }}
{{- $_ := set $byName .name . }}
{{- end }}
{{- $out := list }}
{{- range $order }}
{{- $out = append $out (get $byName .) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
OpenTelemetry's variables of a long-running container: (list $ serviceName). Nothing unless
tracing.enabled; the SDK reads them (eventix_operator/tracing.py).
*/}}
{{- define "eventix-operator.tracingEnv" -}}
{{- $root := index . 0 }}
{{- if $root.Values.tracing.enabled }}
{{- if not $root.Values.tracing.endpoint }}
{{- fail "tracing.endpoint: name the OTLP/HTTP collector the traces go to (e.g. http://otel-collector.monitoring:4318)" }}
{{- end }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $root.Values.tracing.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ index . 1 | quote }}
{{- end }}
{{- end }}

{{/* The Prometheus endpoint of operator and workers; port 0 turns it off. */}}
{{- define "eventix-operator.metricsEnv" -}}
- name: EVENTIX_METRICS_PORT
  value: {{ ternary (.Values.metrics.port | int64) 0 .Values.metrics.enabled | quote }}
{{- end }}

{{/*
A pod template's annotations: (list $ componentPodAnnotations), the component's and, when the
chart makes the database Secret, checksum/database, so that a changed URL restarts the pods.

The checksum is not a hash of the Secret: anyone who may read pods would test password
guesses against a sha256 at the speed of a GPU. It is scrypt (sprig's derivePassword: N=32768,
r=8, p=2) of the URL, salted with the release's namespace and name: the same at every render
(helm template and Argo CD included, unlike a random salt or a `lookup`), different for
another URL or release, and a third of a second of CPU per guess. Computed once per render
(kept on the root context). With database.existingSecret the chart never sees the URL: no
checksum; restart the pods after changing that Secret.
*/}}
{{- define "eventix-operator.podAnnotations" -}}
{{- $root := index . 0 }}
{{- $annotations := dict }}
{{- if and $root.Values.database.url (not $root.Values.database.existingSecret) }}
{{- if not (hasKey $root "eventixDatabaseChecksum") }}
{{- $salt := printf "%s/%s" $root.Release.Namespace $root.Release.Name }}
{{- $derived := derivePassword 1 "maximum" $root.Values.database.url $salt "eventix-operator/database" }}
{{- $_ := set $root "eventixDatabaseChecksum" ($derived | sha256sum | trunc 32) }}
{{- end }}
{{- $_ := set $annotations "checksum/database" (get $root "eventixDatabaseChecksum") }}
{{- end }}
{{- with merge $annotations (index . 1) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* Pod and container security: non-root, read-only, no privileges, RuntimeDefault seccomp. */}}
{{- define "eventix-operator.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "eventix-operator.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* A writable /tmp on the read-only root file system. */}}
{{- define "eventix-operator.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "eventix-operator.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
tenancy.mode and tenancy.allow, also for a release upgraded with --reuse-values from a chart
that had no `tenancy` (Helm then renders with the old chart's defaults).
*/}}
{{- define "eventix-operator.tenancyMode" -}}
{{- dig "mode" "namespaced" (.Values.tenancy | default dict) }}
{{- end }}

{{- define "eventix-operator.tenancyAllow" -}}
{{- dig "allow" dict (.Values.tenancy | default dict) | toJson }}
{{- end }}

{{/*
The worker pool's queues, as a JSON list: workers.queues, or, when empty, the queue that the
release namespace's resources get when they name none (the operator's tenancy rule,
eventix_operator/tenancy.py's default_queue): the namespace's name, or `default` when shared.
*/}}
{{- define "eventix-operator.workerQueues" -}}
{{- if .Values.workers.queues }}
{{- .Values.workers.queues | toJson }}
{{- else if eq (include "eventix-operator.tenancyMode" .) "namespaced" }}
{{- list .Release.Namespace | toJson }}
{{- else }}
{{- list "default" | toJson }}
{{- end }}
{{- end }}

{{/* Quote a queue name for SQL (single quotes doubled). */}}
{{- define "eventix-operator.sqlList" -}}
{{- $quoted := list }}
{{- range . }}
{{- $quoted = append $quoted (printf "'%s'" (replace "'" "''" .)) }}
{{- end }}
{{- join ", " $quoted }}
{{- end }}

{{/*
What the operator does to namespaced objects (a ClusterRole's rules when it watches the whole
cluster, a Role's in each watched namespace otherwise). Each rule is a call the operator makes:
kopf lists and watches the resources and patches its finalizer and progress annotations;
handlers and the status sync patch /status; expired EventixTasks are deleted
(ttlSecondsAfterFinished); kopf and the operator post core/v1 Events.
*/}}
{{- define "eventix-operator.operatorRules" -}}
- apiGroups: ["eventix.io"]
  resources: ["eventixtasks", "eventixschedules", "eventixworkerpools", "eventixtriggers", "eventixqueues"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["eventix.io"]
  resources:
    - "eventixtasks/status"
    - "eventixschedules/status"
    - "eventixworkerpools/status"
    - "eventixtriggers/status"
    - "eventixqueues/status"
  verbs: ["patch"]
- apiGroups: ["eventix.io"]
  resources: ["eventixtasks"]
  verbs: ["delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* kopf peering: the replicas watch the peering objects and patch their own entry into one. */}}
{{- define "eventix-operator.peeringRules" -}}
{{- $root := index . 0 }}
{{- $resource := index . 1 -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ $resource | quote }}]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: [{{ $resource | quote }}]
  resourceNames: [{{ include "eventix-operator.peeringName" $root | quote }}]
  verbs: ["patch"]
{{- end }}

{{/*
EventixWorkerPools read their Deployments (or StatefulSets: labels and replicas, one read; a
target must carry eventix.io/scalable=true) and set their replicas through /scale.
*/}}
{{- define "eventix-operator.scaleRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["patch"]
{{- end }}

{{/* Egress rules every part needs: DNS and the database. */}}
{{- define "eventix-operator.egressDnsAndDatabase" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
- ports:
    - port: {{ .Values.networkPolicy.database.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.database.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
KEDA's query: due tasks (pending, eta passed) plus running ones in the pool's queues, one number.
*/}}
{{- define "eventix-operator.kedaQuery" -}}
SELECT count(*) FROM eventix_task WHERE namespace IN ({{ include "eventix-operator.sqlList" (include "eventix-operator.workerQueues" . | fromJsonArray) }}) AND (status = 'processing' OR (status IN ('scheduled', 'retry') AND eta <= now()))
{{- end }}

{{/* PromQL label selectors (inside {}) of the operator's and the workers' series: the job the
chart's ServiceMonitors give them (their Service's name) in the release namespace, or the
monitoring.selectors values. */}}
{{- define "eventix-operator.operatorSeries" -}}
{{- .Values.monitoring.selectors.operator | default (printf "job=%q, namespace=%q" (include "eventix-operator.operatorName" .) .Release.Namespace) }}
{{- end }}

{{- define "eventix-operator.workerSeries" -}}
{{- .Values.monitoring.selectors.worker | default (printf "job=%q, namespace=%q" (include "eventix-operator.workerName" .) .Release.Namespace) }}
{{- end }}
