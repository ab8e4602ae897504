  wire [3:0] wrd__addr;
  wire [7:0] wrd__data;
  wire [3:0] wwr__addr;
  wire [7:0] wwr__data;
  wire wwr__en;
  reg [7:0] x_r = 8'h00;
  reg [2:0] prog [11:0];
  initial begin
    prog[0] = 3'h0;
    prog[1] = 3'h1;
    prog[2] = 3'h2;
    prog[3] = 3'h7;
    prog[4] = 3'h0;
    prog[5] = 3'h1;
    prog[6] = 3'h2;
    prog[7] = 3'h7;
    prog[8] = 3'h0;
    prog[9] = 3'h1;
    prog[10] = 3'h2;
    prog[11] = 3'h7;
  end
  reg [2:0] _2381_;
  always @(posedge clk) begin
    _2381_ <= prog[prd__addr];
  end
  assign _0_ = _2381_;
  reg [7:0] wmem [11:0];
  initial begin
    wmem[0] = 8'h0a;
    wmem[1] = 8'hbc;
    wmem[2] = 8'h03;
    wmem[3] = 8'h0d;
    wmem[4] = 8'h10;
    wmem[5] = 8'hed;
    wmem[6] = 8'h61;
    wmem[7] = 8'he7;
    wmem[8] = 8'hf6;
    wmem[9] = 8'h1d;
    wmem[10] = 8'h03;
    wmem[11] = 8'h25;
  end
  always @(posedge clk) begin
    if (wr__en)
      wmem[wr__addr] <= wr__data;
  end
  reg [7:0] _2382_;
  always @(posedge clk) begin
    _2382_ <= wmem[prd__addr];
  end
  assign _1_ = _2382_;
  assign i__ready = wb_valid & wb_final;
