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
