// W11 echo (Go peer of the server mode of bench/w11_echo.cpp): a net echo
// server on 127.0.0.1:PORT, one goroutine per connection.
//
//	w11_echo_go PORT
//
// Started by the ember load generator (ember_bench_w11 ... --runtime go --
// w11_echo_go), which appends PORT, measures this process's VmRSS from
// /proc/<pid>/status and kills it when done. Each goroutine loops
// io.ReadFull(conn, 64 bytes) / conn.Write until the peer closes. TCP_NODELAY
// is Go's default for TCP connections; GOMAXPROCS is its default (all cores).
// Built by bench/run (--go) with `go build`, standard library only.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: w11_echo_go PORT")
		os.Exit(64)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "w11_echo_go:", err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "w11_echo_go: accept:", err)
			os.Exit(1)
		}
		go echo(c)
	}
}
