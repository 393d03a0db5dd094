{{- define "ics-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "ics-operator.serviceAccountName" -}}
{{- default (include "ics-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "ics-operator.labels" -}}
app.kubernetes.io/name: ics-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ics-operator.selectorLabels" -}}
app.kubernetes.io/name: ics-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The operator's image: repository@digest when a digest is pinned, else
repository:tag (tag defaulting to the chart's appVersion). The operator runs
it and is told it (ICS_OPERATOR_IMAGE) for the record gateways it renders. */ -}}
{{- define "ics-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
