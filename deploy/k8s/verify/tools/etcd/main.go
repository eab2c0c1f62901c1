// Command etcd is etcd v3.7.0's server, built from go.etcd.io/etcd/server/v3
// (the etcd repository's main package lives in a module that is not meant to
// be required).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
