{{- define "ics-tenant.namespace" -}}
{{- default (printf "scr-%s" .Values.tenant.name) .Values.tenant.namespace -}}
{{- end -}}

{{- define "ics-tenant.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ics-tenant.wave" -}}
{{- if .root.Values.syncWaves }}
annotations:
  argocd.argoproj.io/sync-wave: {{ .wave | quote }}
{{- end }}
{{- end -}}
