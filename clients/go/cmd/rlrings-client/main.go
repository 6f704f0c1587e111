// rlrings-client is what a game team's own client does, written from protos/ alone: it reads a
// replay table's signature, uploads experience that fits it, and downloads the latest model,
// checking its size and SHA-256; with -inference, a game server's part: it asks the inference
// service for the policy's outputs for a batch of observations shaped as the model says, instead
// of running the model itself. It prints one JSON line with what it did.
//
//	rlrings-client -replay 127.0.0.1:8000 -table experience -chunks 8 -steps 32 \
//	    -parameter 127.0.0.1:8001 -out model.pt [-inference 127.0.0.1:8005 -tag solved] [-token $RLRINGS_TOKEN]
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/rlrings/rlrings/clients/go/rlringsv1"
)

// itemSize is the bytes of one element of each dtype the tables use.
var itemSize = map[pb.DType]int{
	pb.DType_DTYPE_BOOL: 1, pb.DType_DTYPE_UINT8: 1, pb.DType_DTYPE_INT8: 1,
	pb.DType_DTYPE_UINT16: 2, pb.DType_DTYPE_INT16: 2, pb.DType_DTYPE_FLOAT16: 2,
	pb.DType_DTYPE_UINT32: 4, pb.DType_DTYPE_INT32: 4, pb.DType_DTYPE_FLOAT32: 4,
	pb.DType_DTYPE_UINT64: 8, pb.DType_DTYPE_INT64: 8, pb.DType_DTYPE_FLOAT64: 8,
}

type result struct {
	Table        string  `json:"table"`
	ChunksAcked  int     `json:"chunks_acked"`
	ItemsStored  int     `json:"items_stored"`
	Duplicates   int     `json:"duplicates"`
	ModelVersion int64   `json:"model_version"`
	ModelBytes   int     `json:"model_bytes"`
	ModelSHA256  string  `json:"model_sha256"`
	Architecture string  `json:"architecture"`
	EnvID        string  `json:"env_id"`
	ActVersion   int64   `json:"act_version,omitempty"`
	ActPolicy    []int64 `json:"act_policy_shape,omitempty"`
	ActValues    int     `json:"act_values,omitempty"`
}

func main() {
	replayAddress := flag.String("replay", "127.0.0.1:8000", "replay service host:port")
	parameterAddress := flag.String("parameter", "127.0.0.1:8001", "parameter service host:port")
	table := flag.String("table", "experience", "replay table to upload to")
	chunks := flag.Int("chunks", 8, "chunks to upload")
	steps := flag.Int("steps", 32, "steps per chunk (a multiple of the table's sequence length)")
	out := flag.String("out", "model.pt", "file the downloaded weights go to")
	writerID := flag.String("writer-id", "", "writer id (default: a fresh one); keep it across reconnects")
	resend := flag.Bool("resend-last", false, "send the last chunk twice, as a retry after a lost ack would")
	inference := flag.String("inference", "", "inference service host:port: ask it for actions (empty: skip)")
	tag := flag.String("tag", "", "with -inference, the tag whose weights answer (empty: the newest)")
	observations := flag.Int("observations", 4, "with -inference, observations per request")
	token := flag.String("token", os.Getenv("RLRINGS_TOKEN"), "bearer token, where the services require one")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if *token != "" { // the auth contract: one metadata entry on every call
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	if *writerID == "" {
		*writerID = fmt.Sprintf("go-client-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	res := result{Table: *table}
	if err := upload(ctx, *replayAddress, *table, *chunks, *steps, *writerID, *resend, &res); err != nil {
		fail(err)
	}
	model, err := download(ctx, *parameterAddress, *out, &res)
	if err != nil {
		fail(err)
	}
	if *inference != "" {
		if err := act(ctx, *inference, *tag, model, *observations, &res); err != nil {
			fail(err)
		}
	}
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rlrings-client:", err)
	os.Exit(1)
}

func dial(address string) (*grpc.ClientConn, error) {
	return grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// upload reads the table's signature with Info and streams chunks whose columns fit it.
func upload(ctx context.Context, address, table string, chunks, steps int, writerID string, resend bool, res *result) error {
	conn, err := dial(address)
	if err != nil {
		return err
	}
	defer conn.Close()
	replay := pb.NewReplayServiceClient(conn)
	info, err := replay.Info(ctx, &pb.InfoRequest{Tables: []string{table}})
	if err != nil {
		return fmt.Errorf("replay Info: %w", err)
	}
	if len(info.Tables) != 1 {
		return fmt.Errorf("replay Info: no table %q", table)
	}
	signature := info.Tables[0].Signature
	stream, err := replay.Insert(ctx)
	if err != nil {
		return fmt.Errorf("replay Insert: %w", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sent := 0
	for sequence := 1; sequence <= chunks; sequence++ {
		chunk := &pb.Chunk{Table: table, WriterId: writerID, Sequence: uint64(sequence), Columns: map[string]*pb.Tensor{}}
		for _, column := range signature {
			chunk.Columns[column.Name] = tensorFor(column, steps, rng)
		}
		copies := 1
		if resend && sequence == chunks {
			copies = 2
		}
		for range copies {
			if err := stream.Send(&pb.InsertRequest{Chunk: chunk}); err != nil {
				return fmt.Errorf("replay Insert: %w", err)
			}
			sent++
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		ack, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("replay Insert: %w", err)
		}
		res.ChunksAcked++
		res.ItemsStored += len(ack.Keys)
		if ack.Duplicate {
			res.Duplicates++
		}
	}
	if res.ChunksAcked != sent {
		return fmt.Errorf("replay Insert: %d of %d chunks acknowledged", res.ChunksAcked, sent)
	}
	return nil
}

// tensorFor makes `steps` steps of one column: zeros, within any bounds that include 0, with
// float columns drawn from [-0.5, 0.5) clipped to the column's bounds.
func tensorFor(column *pb.ColumnSpec, steps int, rng *rand.Rand) *pb.Tensor {
	elements := 1
	for _, d := range column.Shape {
		elements *= int(d)
	}
	data := make([]byte, steps*elements*itemSize[column.Dtype])
	if column.Dtype == pb.DType_DTYPE_FLOAT32 {
		var buffer bytes.Buffer
		for i := 0; i < steps*elements; i++ {
			value := rng.Float32() - 0.5
			if n := len(column.Low); n > 0 {
				value = max(value, float32(column.Low[i%elements%n]))
			}
			if n := len(column.High); n > 0 {
				value = min(value, float32(column.High[i%elements%n]))
			}
			bits := math.Float32bits(value)
			buffer.Write([]byte{byte(bits), byte(bits >> 8), byte(bits >> 16), byte(bits >> 24)}) // little-endian
		}
		data = buffer.Bytes()
	}
	return &pb.Tensor{Dtype: column.Dtype, Shape: append([]int64{int64(steps)}, column.Shape...), Data: data}
}

// download fetches the latest version: a header, then the weights in pieces; it checks the size
// and the raw 32-byte SHA-256 the header carries, and writes the weights to `out`.
func download(ctx context.Context, address, out string, res *result) (*pb.ModelSpec, error) {
	conn, err := dial(address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := pb.NewParameterServiceClient(conn).Fetch(ctx, &pb.FetchRequest{Selector: &pb.FetchRequest_Tag{Tag: "latest"}})
	if err != nil {
		return nil, fmt.Errorf("parameter Fetch: %w", err)
	}
	var header *pb.WeightsHeader
	var weights bytes.Buffer
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parameter Fetch: %w", err)
		}
		if h := message.GetHeader(); h != nil {
			header = h
		} else {
			weights.Write(message.GetData())
		}
	}
	if header == nil {
		return nil, errors.New("parameter Fetch: no header")
	}
	digest := sha256.Sum256(weights.Bytes())
	if uint64(weights.Len()) != header.TotalBytes || !bytes.Equal(digest[:], header.Sha256) {
		return nil, fmt.Errorf("parameter Fetch: %d bytes received, header says %d; sha256 match %v",
			weights.Len(), header.TotalBytes, bytes.Equal(digest[:], header.Sha256))
	}
	if err := os.WriteFile(out, weights.Bytes(), 0o644); err != nil {
		return nil, err
	}
	res.ModelVersion, res.ModelBytes = header.Version, weights.Len()
	res.ModelSHA256 = fmt.Sprintf("%x", digest)
	res.Architecture, res.EnvID = header.GetModel().GetArchitecture(), header.GetModel().GetEnvId()
	return header.GetModel(), nil
}

// act sends one batch of observations shaped as the model's observation space (zeros: a game
// server would send its players' views) on an Act stream and reads the answer.
func act(ctx context.Context, address, tag string, model *pb.ModelSpec, count int, res *result) error {
	box := model.GetObservationSpace().GetBox()
	if box == nil {
		return errors.New("inference: the model's observation space is not a box")
	}
	size, ok := itemSize[box.Dtype]
	if !ok {
		return fmt.Errorf("inference: unknown observation dtype %v", box.Dtype)
	}
	shape := append([]int64{int64(count)}, box.Shape...)
	elements := int64(1)
	for _, d := range shape {
		elements *= d
	}
	conn, err := dial(address)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := pb.NewInferenceServiceClient(conn).Act(ctx)
	if err != nil {
		return fmt.Errorf("inference Act: %w", err)
	}
	observations := &pb.Tensor{Dtype: box.Dtype, Shape: shape, Data: make([]byte, elements*int64(size))}
	if err := stream.Send(&pb.ActRequest{Observations: observations, Tag: tag}); err != nil {
		return fmt.Errorf("inference Act: %w", err)
	}
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("inference Act: %w", err)
	}
	answer, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("inference Act: %w", err)
	}
	res.ActVersion, res.ActPolicy = answer.Version, answer.GetPolicy().GetShape()
	res.ActValues = len(answer.GetValue().GetData()) / 4
	return nil
}
