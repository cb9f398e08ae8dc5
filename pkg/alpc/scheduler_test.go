//go:build linux && !kalpc_stub

package alpc

import "testing"

// TestSchedulerAdmit: the scheduler starts calls up to the handler limit
// and queues the rest in order, runs one-way requests one at a time, and
// refuses a peer that overruns its window or repeats a call's id.
func TestSchedulerAdmit(t *testing.T) {
	var s scheduler
	s.init()
	const window, handlers = 4, 2
	admit := func(id uint64, oneWay bool) (bool, error) {
		return s.admit(&Request{id: id, oneWay: oneWay}, window, handlers)
	}
	for i, want := range []bool{true, true, false} {
		start, err := admit(uint64(i+1), false)
		if err != nil || start != want {
			t.Fatalf("call %d: start %v, err %v; want start %v", i+1, start, err, want)
		}
	}
	if _, err := admit(2, false); err == nil {
		t.Fatal("a duplicate call id was admitted")
	}
	if start, err := admit(10, true); err != nil || !start {
		t.Fatalf("first one-way request: start %v, err %v; want it started", start, err)
	}
	if _, err := admit(11, true); err == nil {
		t.Fatal("a fifth request in a window of 4 was admitted")
	}
	if next := s.nextQueued(); next == nil || next.id != 3 {
		t.Fatalf("next queued call = %v, want call 3", next)
	}
	if next := s.nextQueued(); next != nil {
		t.Fatalf("next queued call = %v, want none", next.id)
	}
	if s.running != handlers-1 {
		t.Errorf("running = %d after a worker found no queued call, want %d", s.running, handlers-1)
	}
}

// TestSchedulerCredits: one-way requests queue behind the running one,
// and credits are returned once none is left (or in batches of window/8).
func TestSchedulerCredits(t *testing.T) {
	var s scheduler
	s.init()
	const window = 64
	reqs := make([]*Request, 10)
	for i := range reqs {
		reqs[i] = &Request{id: uint64(i + 1), oneWay: true}
		start, err := s.admit(reqs[i], window, 1)
		if err != nil || start != (i == 0) {
			t.Fatalf("one-way %d: start %v, err %v", i+1, start, err)
		}
	}
	var credited uint32
	req := reqs[0]
	for i := 0; req != nil; i++ {
		credit, next := s.finished(req, window)
		credited += credit
		if credit != 0 && credit != window/8 && next != nil {
			t.Errorf("credit of %d before the queue emptied; want batches of %d", credit, window/8)
		}
		if next != nil && next != reqs[i+1] {
			t.Fatalf("after request %d came %d, want %d", req.id, next.id, reqs[i+1].id)
		}
		req = next
	}
	if credited != uint32(len(reqs)) || !s.quiet() {
		t.Errorf("credited %d of %d, quiet %v; want all credited and quiet", credited, len(reqs), s.quiet())
	}
}
