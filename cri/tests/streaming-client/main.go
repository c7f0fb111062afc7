// spdy-client: a client of berthd's CRI streaming server that speaks what kubectl and the
// kubelet speak: an HTTP request upgraded to SPDY/3.1 (spdystream, as client-go uses it),
// then the remotecommand protocol (v4.channel.k8s.io and older) or portforward.k8s.io.
//
//	spdy-client exec|attach [flags] URL     stdio is the remote command's; the exit code is
//	                                        the remote exit code (as kubectl exec's)
//	spdy-client portforward [flags] URL     one connection per -send: writes it, half-closes,
//	                                        prints what comes back
//
// Built in GOPATH mode against Debian's golang-github-docker-spdystream-dev.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

var (
	stdinFlag     = flag.Bool("stdin", false, "send stdin")
	stdoutFlag    = flag.Bool("stdout", true, "receive stdout")
	stderrFlag    = flag.Bool("stderr", true, "receive stderr")
	ttyFlag       = flag.Bool("tty", false, "a terminal")
	protocols     = flag.String("protocols", "v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io", "X-Stream-Protocol-Version values, in order of preference")
	statusFile    = flag.String("status", "", "write what came on the error stream here")
	resizeOnOut   = flag.Bool("resize-on-output", false, "send the second -resize once output arrives")
	kubeletParams = flag.Bool("kubelet", false, "name the streams in the query as a kubelet's API takes them (input=1...)")
	port          = flag.Int("port", 0, "portforward: the remote port")
	command       multi
	resizes       multi
	sends         multi
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdy-client: "+format+"\n", a...)
	os.Exit(2)
}

// bufferedConn reads what the HTTP response reader buffered before the connection itself.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// dial sends the upgrade request and returns the SPDY connection and the negotiated protocol.
func dial(rawURL string, query url.Values, protos []string) (*spdystream.Connection, string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		die("%v", err)
	}
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	var conn net.Conn
	if u.Scheme == "https" {
		// A kubelet's API, whose serving certificate is its own self-signed one.
		conn, err = tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = net.Dial("tcp", u.Host)
	}
	if err != nil {
		die("%v", err)
	}
	req, _ := http.NewRequest("POST", u.String(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	for _, p := range protos {
		req.Header.Add("X-Stream-Protocol-Version", p)
	}
	if err := req.Write(conn); err != nil {
		die("%v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		die("%v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(os.Stderr, "HTTP %d: %s", resp.StatusCode, body)
		os.Exit(3)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "SPDY/3.1") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "Upgrade") {
		die("not upgraded to SPDY/3.1: %v", resp.Header)
	}
	sc, err := spdystream.NewConnection(&bufferedConn{conn, br}, false)
	if err != nil {
		die("%v", err)
	}
	go sc.Serve(spdystream.NoOpStreamHandler)
	return sc, resp.Header.Get("X-Stream-Protocol-Version")
}

func create(c *spdystream.Connection, h http.Header) *spdystream.Stream {
	s, err := c.CreateStream(h, nil, false)
	if err != nil {
		die("create stream %v: %v", h, err)
	}
	if err := s.WaitTimeout(30 * time.Second); err != nil {
		die("stream %v: %v", h, err)
	}
	return s
}

func size(s string) []byte {
	var w, h int
	if _, err := fmt.Sscanf(s, "%dx%d", &w, &h); err != nil {
		die("bad size %q", s)
	}
	b, _ := json.Marshal(map[string]int{"Width": w, "Height": h})
	return b
}

// remoteCommand follows client-go's streamProtocolV4 (and v2/v3 for older protocols).
func remoteCommand(rawURL string) {
	q := url.Values{}
	for _, c := range command {
		q.Add("command", c)
	}
	if *kubeletParams {
		// What the API server sends a kubelet's /exec and /attach.
		one := func(b bool) string {
			if b {
				return "1"
			}
			return "0"
		}
		q.Set("input", one(*stdinFlag))
		q.Set("output", one(*stdoutFlag))
		q.Set("error", one(*stderrFlag))
		q.Set("tty", one(*ttyFlag))
	} else {
		q.Set("stdin", strconv.FormatBool(*stdinFlag))
		q.Set("stdout", strconv.FormatBool(*stdoutFlag))
		q.Set("stderr", strconv.FormatBool(*stderrFlag))
		q.Set("tty", strconv.FormatBool(*ttyFlag))
	}
	conn, proto := dial(rawURL, q, strings.Split(*protocols, ","))
	defer conn.Close()

	h := http.Header{}
	h.Set("streamType", "error")
	errStream := create(conn, h)
	var stdin, stdout, stderr, resize *spdystream.Stream
	if *stdinFlag {
		h.Set("streamType", "stdin")
		stdin = create(conn, h)
	}
	if *stdoutFlag {
		h.Set("streamType", "stdout")
		stdout = create(conn, h)
	}
	if *stderrFlag && !*ttyFlag {
		h.Set("streamType", "stderr")
		stderr = create(conn, h)
	}
	if *ttyFlag && (proto == "v4.channel.k8s.io" || proto == "v3.channel.k8s.io") {
		h.Set("streamType", "resize")
		resize = create(conn, h)
	}

	errCh := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(errStream)
		errCh <- b
	}()
	firstOutput := make(chan struct{})
	var once sync.Once
	if resize != nil && len(resizes) > 0 {
		resize.Write(size(resizes[0]))
		go func() {
			for _, r := range resizes[1:] {
				if *resizeOnOut {
					<-firstOutput
				}
				resize.Write(size(r))
			}
		}()
	}
	if stdin != nil {
		go func() {
			io.Copy(stdin, os.Stdin)
			stdin.Close()
		}()
	}
	var wg sync.WaitGroup
	copyOut := func(dst io.Writer, src *spdystream.Stream) {
		defer wg.Done()
		buf := make([]byte, 32*1024)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				dst.Write(buf[:n])
				once.Do(func() { close(firstOutput) })
			}
			if err != nil {
				return
			}
		}
	}
	if stdout != nil {
		wg.Add(1)
		go copyOut(os.Stdout, stdout)
	}
	if stderr != nil {
		wg.Add(1)
		go copyOut(os.Stderr, stderr)
	}
	wg.Wait()
	status := <-errCh
	if *statusFile != "" {
		os.WriteFile(*statusFile, status, 0o644)
	}
	if len(status) == 0 {
		return
	}
	if proto != "v4.channel.k8s.io" {
		fmt.Fprintf(os.Stderr, "error: %s\n", status)
		os.Exit(1)
	}
	var st struct {
		Status  string
		Message string
		Reason  string
		Details struct {
			Causes []struct{ Reason, Message string }
		}
	}
	if err := json.Unmarshal(status, &st); err != nil {
		die("error stream: %v in %q", err, status)
	}
	switch {
	case st.Status == "Success":
		return
	case st.Reason == "NonZeroExitCode":
		for _, c := range st.Details.Causes {
			if c.Reason == "ExitCode" {
				rc, _ := strconv.Atoi(c.Message)
				os.Exit(rc)
			}
		}
		die("no exit code in %s", status)
	default:
		fmt.Fprintf(os.Stderr, "error: %s\n", st.Message)
		os.Exit(1)
	}
}

// portForward follows client-go's PortForwarder: per connection an error stream (closed at
// once: the client writes nothing there) and a data stream, sharing a requestID.
func portForward(rawURL string) {
	conn, _ := dial(rawURL, nil, []string{"portforward.k8s.io"})
	defer conn.Close()
	failed := false
	for i, data := range sends {
		h := http.Header{}
		h.Set("streamType", "error")
		h.Set("port", strconv.Itoa(*port))
		h.Set("requestID", strconv.Itoa(i))
		errStream := create(conn, h)
		errStream.Close()
		errCh := make(chan []byte)
		go func() {
			b, _ := io.ReadAll(errStream)
			errCh <- b
		}()
		h.Set("streamType", "data")
		dataStream := create(conn, h)
		dataStream.Write([]byte(data))
		dataStream.Close()
		got, _ := io.ReadAll(dataStream)
		os.Stdout.Write(got)
		if msg := <-errCh; len(msg) > 0 {
			fmt.Fprintf(os.Stderr, "error: %s\n", msg)
			failed = true
		}
		dataStream.Reset()
		errStream.Reset()
	}
	if failed {
		os.Exit(1)
	}
}

func main() {
	flag.Var(&command, "command", "the command (exec; repeated)")
	flag.Var(&resizes, "resize", "terminal size WxH (repeated: sent in order)")
	flag.Var(&sends, "send", "portforward: data of one connection (repeated)")
	if len(os.Args) < 2 {
		die("usage: spdy-client exec|attach|portforward [flags] URL")
	}
	mode := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	if flag.NArg() != 1 {
		die("one URL expected")
	}
	switch mode {
	case "exec", "attach":
		remoteCommand(flag.Arg(0))
	case "portforward":
		portForward(flag.Arg(0))
	default:
		die("unknown mode %q", mode)
	}
}
