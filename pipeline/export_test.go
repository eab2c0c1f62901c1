package pipeline

// AckFloorSeen is the durable consumer's ack floor at the pipeline's last
// poll of its info (what a recreated consumer resumes after).
func AckFloorSeen(p *Pipeline) uint64 { return p.ackFloor.Load() }
