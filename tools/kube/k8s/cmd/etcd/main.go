// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3 module at the
// version k8s.io/kubernetes itself depends on (see go.mod), the same as upstream's main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
