// A minimal Go worker, the yardstick of the issue that set the CPU targets: nats.go pull ->
// net/http POST -> the result posted to X-Callback-Url when a call names one -> ack, with the
// same concurrency, environment and message format as bench/handwritten.py, and nothing else.
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// The fields of OpenFaaS's QueueRequest that a minimal worker reads; Body is base64 in JSON,
// which encoding/json decodes into []byte.
type queueRequest struct {
	Function string
	Path     string
	Header   map[string][]string
	Body     []byte
}

func main() {
	inflight, err := strconv.Atoi(os.Getenv("max_inflight"))
	if err != nil || inflight < 1 {
		log.Fatalf("max_inflight: %v", err)
	}
	nc, err := nats.Connect(os.Getenv("nats_url"))
	if err != nil {
		log.Fatal(err)
	}
	js, err := nc.JetStream()
	if err != nil {
		log.Fatal(err)
	}
	stream, durable := os.Getenv("nats_stream"), os.Getenv("nats_durable")
	sub, err := js.PullSubscribe(os.Getenv("queue_name"), durable, nats.Bind(stream, durable))
	if err != nil {
		log.Fatal(err)
	}
	gateway := os.Getenv("gateway_url")
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: inflight, MaxIdleConnsPerHost: inflight}}
	slots := make(chan struct{}, inflight)

	post := func(url string, header http.Header, body []byte) (int, []byte, error) {
		request, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		request.Header = header
		response, err := client.Do(request)
		if err != nil {
			return 0, nil, err
		}
		defer response.Body.Close()
		result, err := io.ReadAll(response.Body)
		return response.StatusCode, result, err
	}

	handle := func(msg *nats.Msg) {
		defer func() { <-slots }()
		var request queueRequest
		if err := json.Unmarshal(msg.Data, &request); err != nil {
			log.Print(err)
			msg.Term()
			return
		}
		path := request.Path
		if path == "" {
			path = "/"
		}
		header := http.Header(request.Header)
		status, result, err := post(gateway+"/function/"+request.Function+path, header, request.Body)
		if err != nil {
			log.Print(err)
		}
		if callback := header.Get("X-Callback-Url"); callback != "" {
			posted := http.Header{"X-Call-Id": {header.Get("X-Call-Id")}, "X-Function-Status": {strconv.Itoa(status)}}
			if _, _, err := post(callback, posted, result); err != nil {
				log.Print(err)
			}
		}
		msg.Ack()
	}

	for {
		slots <- struct{}{} // at least one free slot before asking
		free := inflight - len(slots) + 1
		messages, err := sub.Fetch(free, nats.MaxWait(time.Second))
		if err != nil && err != nats.ErrTimeout {
			log.Print(err)
		}
		if len(messages) == 0 {
			<-slots
			continue
		}
		go handle(messages[0])
		for _, msg := range messages[1:] {
			slots <- struct{}{}
			go handle(msg)
		}
	}
}
