// Command etcd is upstream's server/main.go verbatim: all behaviour lives in
// etcdmain, this file only exists so the binary can be built from a module
// without etcd's replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
