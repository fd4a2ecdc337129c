{{/* Names, labels and the pod pieces shared by the API, the workers and the migration Job. */}}

{{- define "dbfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; 52 chars leaves room for the "-worker-NN" pod suffixes. */}}
{{- define "dbfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dbfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dbfleet.labels" -}}
helm.sh/chart: {{ include "dbfleet.chart" . }}
{{ include "dbfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dbfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dbfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "dbfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dbfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the store URL: the user's, or the one this chart creates from database.url. */}}
{{- define "dbfleet.databaseSecretName" -}}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "set either database.existingSecret or database.url, not both" }}
{{- end }}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "dbfleet.fullname" .) }}
{{- end }}
{{- end }}

{{- define "dbfleet.databaseSecretKey" -}}
{{- if .Values.database.url }}database-url{{ else }}{{ .Values.database.existingSecretKey }}{{ end }}
{{- end }}

{{/* Environment every dbfleet container gets: the store URL by reference, never by value. */}}
{{- define "dbfleet.env" -}}
- name: DBFLEET_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "dbfleet.databaseSecretName" . }}
      key: {{ include "dbfleet.databaseSecretKey" . }}
- name: PYTHONUNBUFFERED
  value: "1"
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "dbfleet.configEnv" -}}
- name: DBFLEET_CONFIG
  value: /etc/dbfleet/dbfleet.yaml
{{- end }}

{{- define "dbfleet.configMount" -}}
- name: config
  mountPath: /etc/dbfleet
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "dbfleet.configVolumes" -}}
- name: config
  configMap:
    name: {{ include "dbfleet.fullname" . }}-config
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "dbfleet.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
