{{/* Names, labels and the derived lists every template shares. */}}

{{- define "sigops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sigops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sigops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sigops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "sigops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: sigops
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sigops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sigops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sigops.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "sigops.walTokenSecretName" -}}
{{- default (printf "%s-wal-token" (include "sigops.fullname" .)) .Values.evidence.walReader.token.existingSecret -}}
{{- end -}}

{{- define "sigops.tokenSecretName" -}}
{{- default (printf "%s-alerts-token" (include "sigops.fullname" .)) .Values.alerts.token.existingSecret -}}
{{- end -}}

{{/*
The namespaces sigops watches and acts in: the targets' plus extraNamespaces, sorted and unique,
as a JSON list (use with fromJsonArray).
*/}}
{{- define "sigops.namespaces" -}}
{{- $ns := list -}}
{{- range .Values.targets -}}
{{- $ns = append $ns (default "fractal-lba" .namespace) -}}
{{- range .requestNamespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- end -}}
{{- range .Values.extraNamespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- if not $ns -}}
{{- fail "at least one target (targets) or extraNamespaces entry is required" -}}
{{- end -}}
{{- $ns | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* The effective mode of scenario $s ("A".."E"): the global override or the per-scenario one. */}}
{{- define "sigops.mode" -}}
{{- $v := index .root.Values (printf "scenario%s" .s) -}}
{{- default $v.mode .root.Values.mode -}}
{{- end -}}

{{/*
The operator config (SIGOPS_CONFIG), validated by sigops.settings.Settings at start-up. Only
Settings fields may appear here: unknown keys make the operator refuse to start.
*/}}
{{- define "sigops.config" -}}
{{- $v := .Values -}}
{{- $targets := list -}}
{{- range $v.targets -}}
{{- $t := dict "namespace" (default "fractal-lba" .namespace) "deployment" (default "fractal-lba-backend" .deployment) -}}
{{- if .container }}{{ $_ := set $t "container" .container }}{{ end -}}
{{- if .backendURL }}{{ $_ := set $t "backendURL" .backendURL }}{{ end -}}
{{- if .default }}{{ $_ := set $t "default" true }}{{ end -}}
{{- if .profile }}{{ $_ := set $t "profile" .profile }}{{ end -}}
{{- if not (kindIs "invalid" .maxSkewSeconds) }}{{ $_ := set $t "maxSkewSeconds" .maxSkewSeconds }}{{ end -}}
{{- with .env }}{{ $_ := set $t "env" . }}{{ end -}}
{{- if and .agentSecret .agentSecret.name }}{{ $_ := set $t "agentSecret" .agentSecret }}{{ end -}}
{{- with .requestNamespaces }}{{ $_ := set $t "requestNamespaces" . }}{{ end -}}
{{- if .allowErrorRateQuery }}{{ $_ := set $t "allowErrorRateQuery" true }}{{ end -}}
{{- with .samplesConfigMap }}{{ $_ := set $t "samplesConfigMap" . }}{{ end -}}
{{- with .walClaim }}{{ $_ := set $t "walClaim" . }}{{ end -}}
{{- with .walSource }}{{ $_ := set $t "walSource" . }}{{ end -}}
{{- $targets = append $targets $t -}}
{{- end -}}
{{- $modes := dict -}}
{{- range $s := list "A" "B" "C" "D" "E" -}}
{{- $_ := set $modes $s (include "sigops.mode" (dict "root" $ "s" $s)) -}}
{{- end -}}
{{- $cfg := dict
  "targets" $targets
  "modes" $modes
  "alert_name" $v.detection.alertName
  "signature_error_metric" $v.detection.signatureErrorMetric
  "error_rate_query" $v.detection.errorRateQuery
  "error_rate_window" $v.detection.errorRateWindow
  "error_rate_threshold" $v.detection.errorRateThreshold
  "alert_poll_interval" $v.detection.alertPollInterval
  "namespace_label" $v.detection.namespaceLabel
  "deployment_label" $v.detection.deploymentLabel
  "label_nodes" $v.scenarioB.labelNodes
  "ntp_label" $v.scenarioB.ntpLabel
  "skew_metric" $v.scenarioB.skewMetric
  "token_rate" ($v.scenarioD.tokenRate | toString)
  "cooldown" $v.scenarioD.cooldown
  "e_auto_window" $v.scenarioE.autoWindow
  "last_known_good_after" $v.scenarioE.lastKnownGoodAfter
  "verify_timeout" $v.remediation.verifyTimeout
  "escalate_after" $v.remediation.escalateAfter
  "escalated_hold" $v.remediation.escalatedHold
  "wait_for_rollout" $v.remediation.waitForRollout
  "rollout_timeout" $v.remediation.rolloutTimeout
  "probe_timeout" $v.remediation.probeTimeout
  "wal_exec" $v.evidence.walExec.enabled
  "wal_exec_dir" $v.evidence.walExec.dir
  "overlap_probe_grace" $v.keyRotation.overlapProbeGrace
  "overlap_probe_rounds" $v.keyRotation.overlapProbeRounds
  "min_overlap" $v.keyRotation.minOverlap
  "reconcile_interval" $v.keyRotation.reconcileInterval
  "signal_rate_limit" $v.signals.rateLimit
  "signal_rate_window" $v.signals.rateWindow
  "service_id" $v.signals.serviceId
  "audit" (dict
    "enabled" $v.audit.enabled
    "maxParallelism" $v.audit.maxParallelism
    "maxShards" $v.audit.maxShards
    "backoffLimitPerIndex" $v.audit.backoffLimitPerIndex
    "activeDeadline" $v.audit.activeDeadline
    "ttlAfterFinished" $v.audit.ttlAfterFinished
    "firstN" $v.audit.firstN
    "image" (default (include "sigops.image" .) $v.audit.image)
    "cpu" ($v.audit.cpu | toString)
    "memory" $v.audit.memory
    "walTokenSecret" (include "sigops.walTokenSecretName" .)
    "walTokenKey" $v.evidence.walReader.token.secretKey)
-}}
{{- if $v.remediation.notificationURL -}}
{{- $_ := set $cfg "notification_url" $v.remediation.notificationURL -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.extraConfig)) -}}
{{- end -}}

{{/*
The projected sources of the Prometheus credentials volume (empty when none is set): each
Secret key lands under the fixed file name the Deployment's env points at.
*/}}
{{- define "sigops.prometheusSecrets" -}}
{{- with .Values.prometheus -}}
{{- if .tls.caSecret.name }}
- secret:
    name: {{ .tls.caSecret.name }}
    items: [{key: {{ .tls.caSecret.key | quote }}, path: ca.crt}]
{{- end }}
{{- if .tls.clientCertSecret }}
- secret:
    name: {{ .tls.clientCertSecret }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- if .bearerTokenSecret.name }}
- secret:
    name: {{ .bearerTokenSecret.name }}
    items: [{key: {{ .bearerTokenSecret.key | quote }}, path: token}]
{{- end }}
{{- if .basicAuth.username }}
- secret:
    name: {{ required "prometheus.basicAuth.passwordSecret.name is required with basicAuth.username" .basicAuth.passwordSecret.name }}
    items: [{key: {{ .basicAuth.passwordSecret.key | quote }}, path: password}]
{{- end }}
{{- if and .bearerTokenSecret.name .basicAuth.username }}
{{- fail "prometheus.bearerTokenSecret and prometheus.basicAuth are exclusive" }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The label matchers of sigops' own series: its scrape job (the Service's name, as a
ServiceMonitor names it) in the release namespace. */}}
{{- define "sigops.jobSelector" -}}
job="{{ default (include "sigops.fullname" .) .Values.healthRules.job }}",namespace="{{ .Release.Namespace }}"
{{- end -}}

{{/*
The errors per second of each target, one series per backend labelled with the namespace and
Deployment labels of `detection`: the FLKSignatureFailuresSpike rule and the dashboard read it,
and it is the text of Settings.error_rate_by_target (the operator's default error-rate guard is
the same expression narrowed to one target; tests/unit/test_chart.py holds the two equal).
A pod's series counts for the Deployment its name says (<deployment>-<template hash>-<id>);
a namespace whose series carry no pod label counts as one series without a Deployment label.
Takes a dict: metric, namespaceLabel, deploymentLabel, window (the detection values).
*/}}
{{- define "sigops.errorRateByTarget" -}}
{{- $alt := dict "flk_signature_err" "flk_signature_errors" "flk_signature_errors" "flk_signature_err" -}}
{{- $names := .metric -}}
{{- if hasKey $alt .metric -}}
{{- $names = printf "%s|%s" .metric (get $alt .metric) -}}
{{- end -}}
{{- $m := printf "__name__=~\"%s\"" $names -}}
{{- $ns := .namespaceLabel -}}
{{- $dep := .deploymentLabel -}}
{{- printf "sum by (%s, %s) (label_replace(rate({%s,pod!=\"\"}[%s]), \"%s\", \"$1\", \"pod\", \"(.+)-[a-z0-9]+-[a-z0-9]+\"))" $ns $dep $m .window $dep -}}
{{- printf " or (sum by (%s) (rate({%s}[%s])) unless on(%s) count by (%s) ({%s,pod!=\"\"}))" $ns $m .window $ns $ns $m -}}
{{- end -}}

{{/* sigops.errorRateByTarget for this release's detection values. */}}
{{- define "sigops.errorRateByTarget.values" -}}
{{- with .Values.detection -}}
{{- include "sigops.errorRateByTarget" (dict "metric" .signatureErrorMetric "namespaceLabel" .namespaceLabel "deploymentLabel" .deploymentLabel "window" .errorRateWindow) -}}
{{- end -}}
{{- end -}}
