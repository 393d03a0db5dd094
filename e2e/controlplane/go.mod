module github.com/carerecord/ics-operator/e2e/controlplane

go 1.25.0

require k8s.io/kubernetes v1.34.12

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/coreos/go-semver v0.3.1 // indirect
	github.com/coreos/go-systemd/v22 v22.5.0 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang-jwt/jwt/v5 v5.2.2 // indirect
	github.com/golang/groupcache v0.0.0-20210331224755-41bb18bfe9da // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/google/btree v1.1.3 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/gorilla/websocket v1.5.4-0.20250319132907-e064f32e3674 // indirect
	github.com/grpc-ecosystem/go-grpc-middleware v1.3.0 // indirect
	github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus v1.0.1 // indirect
	github.com/grpc-ecosystem/go-grpc-middleware/v2 v2.3.0 // indirect
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.26.3 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/jonboulle/clockwork v0.5.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_golang v1.22.0 // indirect
	github.com/prometheus/client_model v0.6.1 // indirect
	github.com/prometheus/common v0.62.0 // indirect
	github.com/prometheus/procfs v0.15.1 // indirect
	github.com/sirupsen/logrus v1.9.3 // indirect
	github.com/soheilhy/cmux v0.1.5 // indirect
	github.com/spf13/cobra v1.9.1 // indirect
	github.com/spf13/pflag v1.0.6 // indirect
	github.com/tmc/grpc-websocket-proxy v0.0.0-20220101234140-673ab2c3ae75 // indirect
	github.com/xiang90/probing v0.0.0-20221125231312-a49e3df8f510 // indirect
	go.etcd.io/bbolt v1.4.2 // indirect
	go.etcd.io/etcd/api/v3 v3.6.4 // indirect
	go.etcd.io/etcd/client/pkg/v3 v3.6.4 // indirect
	go.etcd.io/etcd/client/v3 v3.6.4 // indirect
	go.etcd.io/etcd/pkg/v3 v3.6.4 // indirect
	go.etcd.io/etcd/server/v3 v3.6.4 // indirect
	go.etcd.io/raft/v3 v3.6.0 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc v0.60.0 // indirect
	go.opentelemetry.io/otel v1.41.0 // indirect
	go.opentelemetry.io/otel/exporters/otlp/otlptrace v1.34.0 // indirect
	go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc v1.34.0 // indirect
	go.opentelemetry.io/otel/metric v1.41.0 // indirect
	go.opentelemetry.io/otel/sdk v1.34.0 // indirect
	go.opentelemetry.io/otel/trace v1.41.0 // indirect
	go.opentelemetry.io/proto/otlp v1.5.0 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	go.uber.org/zap v1.27.0 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	golang.org/x/crypto v0.53.0 // indirect
	golang.org/x/net v0.56.0 // indirect
	golang.org/x/sys v0.46.0 // indirect
	golang.org/x/text v0.39.0 // indirect
	golang.org/x/time v0.9.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20250303144028-a0af3efb3deb // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250303144028-a0af3efb3deb // indirect
	google.golang.org/grpc v1.72.1 // indirect
	google.golang.org/protobuf v1.36.12-0.20260120151049-f2248ac996af // indirect
	gopkg.in/natefinch/lumberjack.v2 v2.2.1 // indirect
	sigs.k8s.io/json v0.0.0-20241014173422-cfa47c3a1cc8 // indirect
	sigs.k8s.io/yaml v1.6.0 // indirect
)

// k8s.io/kubernetes points its staging modules at ./staging; use their published versions instead.
replace (
	k8s.io/api => k8s.io/api v0.34.12
	k8s.io/apiextensions-apiserver => k8s.io/apiextensions-apiserver v0.34.12
	k8s.io/apimachinery => k8s.io/apimachinery v0.34.12
	k8s.io/apiserver => k8s.io/apiserver v0.34.12
	k8s.io/cli-runtime => k8s.io/cli-runtime v0.34.12
	k8s.io/client-go => k8s.io/client-go v0.34.12
	k8s.io/cloud-provider => k8s.io/cloud-provider v0.34.12
	k8s.io/cluster-bootstrap => k8s.io/cluster-bootstrap v0.34.12
	k8s.io/code-generator => k8s.io/code-generator v0.34.12
	k8s.io/component-base => k8s.io/component-base v0.34.12
	k8s.io/component-helpers => k8s.io/component-helpers v0.34.12
	k8s.io/controller-manager => k8s.io/controller-manager v0.34.12
	k8s.io/cri-api => k8s.io/cri-api v0.34.12
	k8s.io/cri-client => k8s.io/cri-client v0.34.12
	k8s.io/csi-translation-lib => k8s.io/csi-translation-lib v0.34.12
	k8s.io/dynamic-resource-allocation => k8s.io/dynamic-resource-allocation v0.34.12
	k8s.io/endpointslice => k8s.io/endpointslice v0.34.12
	k8s.io/externaljwt => k8s.io/externaljwt v0.34.12
	k8s.io/kms => k8s.io/kms v0.34.12
	k8s.io/kube-aggregator => k8s.io/kube-aggregator v0.34.12
	k8s.io/kube-controller-manager => k8s.io/kube-controller-manager v0.34.12
	k8s.io/kube-proxy => k8s.io/kube-proxy v0.34.12
	k8s.io/kube-scheduler => k8s.io/kube-scheduler v0.34.12
	k8s.io/kubectl => k8s.io/kubectl v0.34.12
	k8s.io/kubelet => k8s.io/kubelet v0.34.12
	k8s.io/metrics => k8s.io/metrics v0.34.12
	k8s.io/mount-utils => k8s.io/mount-utils v0.34.12
	k8s.io/pod-security-admission => k8s.io/pod-security-admission v0.34.12
	k8s.io/sample-apiserver => k8s.io/sample-apiserver v0.34.12
	k8s.io/sample-cli-plugin => k8s.io/sample-cli-plugin v0.34.12
	k8s.io/sample-controller => k8s.io/sample-controller v0.34.12
)
