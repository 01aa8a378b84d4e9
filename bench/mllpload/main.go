// mllpload is one MLLP sender for bench/mllp_e2e.py: it sends the MLLP frames of a file
// over one connection, keeping up to -window frames in flight (ACKs return in order),
// and prints, as JSON, each message's time from writing its frame to reading its ACK.
// A compiled sender keeps the load generator's own CPU use small beside the server's.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

type result struct {
	Count     int     `json:"count"`
	NotAA     int     `json:"not_aa"`
	LatencyUs []int64 `json:"latency_us"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:2575", "MLLP listener")
	in := flag.String("in", "", "file of MLLP frames (0x0B ... 0x1C 0x0D)")
	window := flag.Int("window", 8, "frames in flight")
	start := flag.String("start", "", "wait until this file exists before sending")
	flag.Parse()

	raw, err := os.ReadFile(*in)
	check(err)
	var frames [][]byte
	for _, part := range bytes.Split(raw, []byte{0x1c, 0x0d}) {
		if len(part) > 0 {
			frames = append(frames, append(part, 0x1c, 0x0d))
		}
	}
	conn, err := net.Dial("tcp", *addr)
	check(err)
	defer conn.Close()
	for *start != "" {
		if _, err := os.Stat(*start); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	sent := make([]time.Time, len(frames))
	slots := make(chan struct{}, *window)
	res := result{Count: len(frames), LatencyUs: make([]int64, 0, len(frames))}
	done := make(chan error, 1)
	go func() {
		reader := bufio.NewReaderSize(conn, 1<<16)
		for i := range frames {
			ack, err := reader.ReadBytes(0x1c)
			if err != nil {
				done <- fmt.Errorf("reading ACK %d: %w", i, err)
				return
			}
			if _, err := reader.ReadByte(); err != nil { // the 0x0D after 0x1C
				done <- err
				return
			}
			res.LatencyUs = append(res.LatencyUs, time.Since(sent[i]).Microseconds())
			if !bytes.Contains(ack, []byte("MSA|AA")) {
				res.NotAA++
			}
			<-slots
		}
		done <- nil
	}()
	writer := bufio.NewWriterSize(conn, 1<<16)
	for i, frame := range frames {
		slots <- struct{}{}
		sent[i] = time.Now()
		_, err := writer.Write(frame)
		check(err)
		check(writer.Flush())
	}
	check(<-done)
	check(json.NewEncoder(os.Stdout).Encode(res))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "mllpload:", err)
		os.Exit(1)
	}
}
