{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "isthmus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "isthmus.fullname" -}}
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

{{- define "isthmus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "isthmus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "isthmus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "isthmus.labels" -}}
helm.sh/chart: {{ include "isthmus.chart" . }}
{{ include "isthmus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: isthmus
{{- end }}

{{- define "isthmus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "isthmus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "isthmus.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "isthmus.keysSecretName" -}}
{{- default (printf "%s-keys" (include "isthmus.fullname" .)) .Values.keys.existingSecret }}
{{- end }}

{{/* Where things are mounted in the container. */}}
{{- define "isthmus.configPath" -}}/etc/isthmus/config/isthmus.yaml{{- end }}
{{- define "isthmus.keysDir" -}}/etc/isthmus/keys{{- end }}
{{- define "isthmus.containerPort" -}}8080{{- end }}

{{/* Redis ------------------------------------------------------------------------------ */}}

{{/*
How the hub reaches Redis: "dependency" (bitnami/redis of this release), "sentinel"
(external sentinels), "url" (external server, URL in values or in a Secret), or "none"
(memory store and registry: one replica). Two at once is refused.
*/}}
{{- define "isthmus.redisMode" -}}
{{- $r := .Values.redis }}
{{- $modes := list }}
{{- if $r.enabled }}{{ $modes = append $modes "redis.enabled" }}{{ end }}
{{- if $r.sentinel.hosts }}{{ $modes = append $modes "redis.sentinel.hosts" }}{{ end }}
{{- if $r.url }}{{ $modes = append $modes "redis.url" }}{{ end }}
{{- if and $r.existingSecret (not $r.sentinel.hosts) }}{{ $modes = append $modes "redis.existingSecret" }}{{ end }}
{{- if and ($r.cluster | default dict).enabled (or $r.enabled $r.sentinel.hosts) }}
{{- fail "isthmus: redis.cluster needs an external Redis Cluster node in redis.url or redis.existingSecret, not redis.enabled or redis.sentinel" }}
{{- end }}
{{- if gt (len $modes) 1 }}
{{- fail (printf "isthmus: choose one way to reach Redis, not %s" (join " and " $modes)) }}
{{- end }}
{{- if $r.enabled }}dependency
{{- else if $r.sentinel.hosts }}sentinel
{{- else if or $r.url $r.existingSecret }}url
{{- else }}none
{{- end }}
{{- end }}

{{/* The bitnami/redis dependency's full name (its own naming rule). */}}
{{- define "isthmus.redisDependencyFullname" -}}
{{- if .Values.redis.fullnameOverride }}
{{- .Values.redis.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "redis" .Values.redis.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret (name and key) that holds the dependency's password. */}}
{{- define "isthmus.redisDependencyPasswordRef" -}}
{{- $auth := .Values.redis.auth | default dict }}
{{- if $auth.existingSecret -}}
name: {{ $auth.existingSecret }}
key: {{ default "redis-password" $auth.existingSecretPasswordKey }}
{{- else -}}
name: {{ include "isthmus.redisDependencyFullname" . }}
key: redis-password
{{- end }}
{{- end }}

{{- define "isthmus.redisDependencyAuth" -}}
{{- $auth := .Values.redis.auth | default dict }}
{{- if hasKey $auth "enabled" }}{{ if $auth.enabled }}true{{ end }}{{ else }}true{{ end }}
{{- end }}

{{- define "isthmus.redisDependencySentinel" -}}
{{- $s := .Values.redis.sentinel | default dict }}
{{- if $s.enabled }}true{{ end }}
{{- end }}

{{/* The Secret the chart manages (Redis URL or passwords, seeded partners and clients). */}}
{{- define "isthmus.secretName" -}}
{{- include "isthmus.fullname" . }}
{{- end }}

{{/* The settings file --------------------------------------------------------------------- */}}

{{/*
The hub's settings as rendered into the ConfigMap: config minus partners/clients (they go
to the Secret), plus what the chart owns. Connection URLs and passwords are not here: they
come from the environment (ISTHMUS_STORE__*), set in the Deployment from Secrets.
*/}}
{{- define "isthmus.settings" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := unset $cfg "partners" }}
{{- $_ := unset $cfg "clients" }}
{{- if .Values.seedConfigMap }}{{ $_ := unset $cfg "apps" }}{{ end }}
{{- $_ := set $cfg "listen" (dict "host" "0.0.0.0" "port" (int (include "isthmus.containerPort" .))) }}
{{- $_ := set $cfg "keys" (dict "path" (printf "%s/%s" (include "isthmus.keysDir" .) .Values.keys.existingSecretKey) "algorithm" .Values.keys.algorithm) }}
{{- $registry := deepCopy ($cfg.registry | default dict) }}
{{- $mode := include "isthmus.redisMode" . }}
{{- if eq $mode "none" }}
{{- $_ := set $cfg "store" (dict "backend" "memory") }}
{{- $_ := set $registry "backend" "memory" }}
{{- else }}
{{- $store := dict "backend" "redis" "prefix" .Values.redis.prefix }}
{{- if or (eq $mode "sentinel") (and (eq $mode "dependency") (include "isthmus.redisDependencySentinel" .)) }}
{{- $_ := set $store "sentinel" (include "isthmus.sentinelSettings" . | fromYaml) }}
{{- end }}
{{- $cluster := .Values.redis.cluster | default dict }}
{{- if and (eq $mode "url") $cluster.enabled }}
{{- $_ := set $store "cluster" true }}
{{- with $cluster.nodes }}{{ $_ := set $store "cluster_nodes" . }}{{ end }}
{{- end }}
{{- $_ := set $cfg "store" $store }}
{{- $_ := set $registry "backend" "redis" }}
{{- end }}
{{- $_ := set $cfg "registry" $registry }}
{{- toYaml $cfg }}
{{- end }}

{{/* Sentinel settings without passwords (those come from the environment). */}}
{{- define "isthmus.sentinelSettings" -}}
{{- if .Values.redis.enabled -}}
hosts:
  - {{ printf "%s:26379" (include "isthmus.redisDependencyFullname" .) }}
master_name: {{ (.Values.redis.sentinel | default dict).masterSet | default "mymaster" }}
{{- else -}}
hosts: {{ toYaml .Values.redis.sentinel.hosts | nindent 2 }}
master_name: {{ .Values.redis.sentinel.masterName | quote }}
db: {{ .Values.redis.sentinel.db | int }}
{{- with .Values.redis.sentinel.username }}
username: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Checks that need more than the schema, each with what to do about it. */}}
{{- define "isthmus.validate" -}}
{{- $mode := include "isthmus.redisMode" . }}
{{- $cfg := .Values.config | default dict }}
{{- if and .Values.ingress.enabled (not $cfg.issuer) }}
{{- fail "isthmus: ingress.enabled needs config.issuer, the hub's public URL (https://<ingress host>)" }}
{{- end }}
{{- if and .Values.existingSecret (or $cfg.partners $cfg.clients) }}
{{- fail "isthmus: existingSecret holds partners.json/clients.json: leave config.partners and config.clients empty" }}
{{- end }}
{{- if and .Values.seedConfigMap (or $cfg.apps $cfg.partners) }}
{{- fail "isthmus: seedConfigMap holds partners.json/apps.json: leave config.partners and config.apps empty" }}
{{- end }}
{{- $obs := $cfg.observability | default dict }}
{{- $drain := 5.0 }}{{ if hasKey $obs "drain_seconds" }}{{ $drain = float64 $obs.drain_seconds }}{{ end }}
{{- $graceful := 20.0 }}{{ if hasKey $obs "graceful_timeout_seconds" }}{{ $graceful = float64 $obs.graceful_timeout_seconds }}{{ end }}
{{- $needed := addf .Values.preStopSleepSeconds $drain $graceful }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "isthmus: terminationGracePeriodSeconds (%v) must cover preStopSleepSeconds + config.observability.drain_seconds + graceful_timeout_seconds (%v)" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}

{{/* The environment: Redis URL/passwords and seeded lists, all from Secrets/ConfigMaps. */}}
{{- define "isthmus.env" -}}
{{- $mode := include "isthmus.redisMode" . }}
{{- $secret := include "isthmus.secretName" . }}
{{- $r := .Values.redis }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- if eq $mode "url" }}
- name: ISTHMUS_STORE__URL
  valueFrom:
    secretKeyRef:
{{- if $r.url }}
      name: {{ $secret }}
      key: redis-url
{{- else }}
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretKey }}
{{- end }}
{{- else if eq $mode "sentinel" }}
{{- if or $r.password $r.existingSecret }}
- name: ISTHMUS_STORE__SENTINEL__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default $secret $r.existingSecret }}
      key: redis-password
      optional: {{ not $r.password }}
{{- end }}
{{- if or $r.sentinelPassword $r.existingSecret }}
- name: ISTHMUS_STORE__SENTINEL__SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default $secret $r.existingSecret }}
      key: redis-sentinel-password
      optional: {{ not $r.sentinelPassword }}
{{- end }}
{{- else if eq $mode "dependency" }}
{{- $auth := include "isthmus.redisDependencyAuth" . }}
{{- if $auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "isthmus.redisDependencyPasswordRef" . | nindent 6 }}
{{- end }}
{{- if include "isthmus.redisDependencySentinel" . }}
{{- if $auth }}
- name: ISTHMUS_STORE__SENTINEL__PASSWORD
  value: $(REDIS_PASSWORD)
{{- $sauth := ((.Values.redis.auth | default dict).sentinel) }}
{{- if or (kindIs "invalid" $sauth) $sauth }}
- name: ISTHMUS_STORE__SENTINEL__SENTINEL_PASSWORD
  value: $(REDIS_PASSWORD)
{{- end }}
{{- end }}
{{- else }}
- name: ISTHMUS_STORE__URL
  value: {{ printf "redis://%s%s-master:6379/0" (ternary ":$(REDIS_PASSWORD)@" "" (not (empty $auth))) (include "isthmus.redisDependencyFullname" .) | quote }}
{{- end }}
{{- end }}
{{- $cfg := .Values.config | default dict }}
{{- if .Values.seedConfigMap }}
- name: ISTHMUS_PARTNERS
  valueFrom:
    configMapKeyRef:
      name: {{ .Values.seedConfigMap }}
      key: partners.json
      optional: true
- name: ISTHMUS_APPS
  valueFrom:
    configMapKeyRef:
      name: {{ .Values.seedConfigMap }}
      key: apps.json
      optional: true
{{- end }}
{{- if .Values.existingSecret }}
{{- if not .Values.seedConfigMap }}
- name: ISTHMUS_PARTNERS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: partners.json
      optional: true
{{- end }}
- name: ISTHMUS_CLIENTS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: clients.json
      optional: true
{{- else }}
{{- if $cfg.partners }}
- name: ISTHMUS_PARTNERS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: partners.json
{{- end }}
{{- if $cfg.clients }}
- name: ISTHMUS_CLIENTS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: clients.json
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* What the chart's Secret holds (empty: no Secret). */}}
{{- define "isthmus.secretData" -}}
{{- $mode := include "isthmus.redisMode" . }}
{{- $r := .Values.redis }}
{{- $cfg := .Values.config | default dict }}
{{- if and (eq $mode "url") $r.url }}
redis-url: {{ $r.url | b64enc | quote }}
{{- end }}
{{- if and (eq $mode "sentinel") (not $r.existingSecret) }}
{{- with $r.password }}
redis-password: {{ . | b64enc | quote }}
{{- end }}
{{- with $r.sentinelPassword }}
redis-sentinel-password: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- with $cfg.partners }}
partners.json: {{ toJson . | b64enc | quote }}
{{- end }}
{{- with $cfg.clients }}
clients.json: {{ toJson . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}
