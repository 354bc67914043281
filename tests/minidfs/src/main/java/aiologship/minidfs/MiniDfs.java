package aiologship.minidfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Writer;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.server.datanode.DataNode;
import org.apache.hadoop.hdfs.server.namenode.NameNode;

/**
 * A MiniDFSCluster for aiologship's tests (tests/hdfs/conftest.py).
 *
 * <pre>
 * java -cp ... aiologship.minidfs.MiniDfs DATA_DIR [--datanodes N] [--block-size BYTES]
 * </pre>
 *
 * Prints one JSON line on stdout once the cluster is up ({"event": "ready", ports, conf_dir}),
 * then reads one command per line on stdin and answers each with one JSON line:
 * {@code status}, {@code open-files}, {@code restart-namenode}, {@code stop-namenode}, {@code start-namenode},
 * {@code stop-datanode N}, {@code start-datanode N}, {@code lease-period SOFT_MS HARD_MS},
 * {@code shutdown}. It shuts down when
 * stdin closes, so a test run that dies never leaves a cluster behind.
 *
 * Everything listens on 127.0.0.1 and DataNodes advertise 127.0.0.1 as their hostname, so
 * WebHDFS redirects to DataNodes resolve on any machine.
 */
public final class MiniDfs {
  /** The JSON protocol owns stdout; Hadoop's chatter goes to stderr. */
  private static final PrintStream OUT = System.out;

  private final MiniDFSCluster cluster;
  private final Path confDir;
  private final int rpcPort;
  private final int httpPort;
  /** Stopped DataNodes, kept so start-datanode brings back the same one on its old ports. */
  private final Map<Integer, MiniDFSCluster.DataNodeProperties> stopped = new LinkedHashMap<>();
  /**
   * DataNode N is the one started N-th; restarts keep its transfer port, not its place in
   * the cluster's list (a restarted node goes to the end), so it is found by that port.
   */
  private final List<Integer> xferPorts = new ArrayList<>();

  private MiniDfs(MiniDFSCluster cluster, Path confDir, int rpcPort, int httpPort) {
    this.cluster = cluster;
    this.confDir = confDir;
    this.rpcPort = rpcPort;
    this.httpPort = httpPort;
    for (DataNode dn : cluster.getDataNodes()) {
      xferPorts.add(dn.getXferPort());
    }
  }

  public static void main(String[] args) throws Exception {
    System.setOut(System.err);
    if (args.length < 1) {
      OUT.println("{\"event\": \"error\", \"error\": \"usage: MiniDfs DATA_DIR [--datanodes N]"
          + " [--block-size BYTES] [--conf KEY=VALUE]...\"}");
      OUT.flush();
      System.exit(2);
    }
    File dataDir = new File(args[0]).getAbsoluteFile();
    int datanodes = 2;
    long blockSize = 1024 * 1024;
    Map<String, String> extraConf = new LinkedHashMap<>();
    for (int i = 1; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--datanodes" -> datanodes = Integer.parseInt(args[i + 1]);
        case "--block-size" -> blockSize = Long.parseLong(args[i + 1]);
        case "--conf" -> {
          String[] kv = args[i + 1].split("=", 2);
          if (kv.length != 2) {
            throw new IllegalArgumentException("--conf wants KEY=VALUE, got " + args[i + 1]);
          }
          extraConf.put(kv[0], kv[1]);
        }
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    MiniDfs mini;
    try {
      mini = start(dataDir, datanodes, blockSize, extraConf);
    } catch (Throwable t) {
      t.printStackTrace();
      OUT.println("{\"event\": \"error\", \"error\": " + json(String.valueOf(t)) + "}");
      OUT.flush();
      System.exit(1);
      return;
    }
    OUT.println(mini.describe("ready"));
    OUT.flush();
    mini.serve();
  }

  private static MiniDfs start(
      File dataDir, int datanodes, long blockSize, Map<String, String> extraConf)
      throws IOException {
    int rpcPort = freePort();
    int httpPort = freePort();
    Configuration conf = new HdfsConfiguration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dataDir.getPath());
    conf.setInt("dfs.replication", 1);
    conf.setLong("dfs.namenode.fs-limits.min-block-size", 4096);
    conf.setLong("dfs.blocksize", blockSize);
    conf.setInt("dfs.bytes-per-checksum", 512);
    // Fast restarts: no safe-mode extension, quick heartbeats, and a DataNode that stops
    // answering is "stale" after 3 s so new blocks avoid it (fault tests stop DataNodes).
    conf.setInt("dfs.namenode.safemode.extension", 0);
    // A NameNode restarted while a DataNode is stopped (a fault test that failed
    // before it restarted the node, then the next test's heal) never reached the
    // default 99.9% of reported blocks with replication 1, and restartNameNode()
    // waited for it forever (seen in jstack: waitNameNodeUp). Leave safe mode at once.
    conf.setFloat("dfs.namenode.safemode.threshold-pct", 0.0f);
    conf.setLong("dfs.heartbeat.interval", 1);
    conf.setInt("dfs.namenode.heartbeat.recheck-interval", 2000);
    conf.setLong("dfs.namenode.stale.datanode.interval", 3000);
    conf.setBoolean("dfs.namenode.avoid.write.stale.datanode", true);
    conf.setBoolean("dfs.namenode.avoid.read.stale.datanode", true);
    conf.setBoolean("dfs.permissions.enabled", true);
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
    conf.set("dfs.namenode.http-bind-host", "127.0.0.1");
    // Small clusters: never try to replace a DataNode in a pipeline (there is none spare).
    conf.set("dfs.client.block.write.replace-datanode-on-failure.policy", "NEVER");
    conf.setBoolean("dfs.client.block.write.replace-datanode-on-failure.enable", false);
    extraConf.forEach(conf::set);
    MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, dataDir)
        .numDataNodes(datanodes)
        .nameNodePort(rpcPort)
        .nameNodeHttpPort(httpPort)
        // Sets dfs.datanode.hostname=127.0.0.1: WebHDFS redirects name DataNodes by it.
        .checkDataNodeHostConfig(true)
        .format(true)
        .build();
    cluster.waitActive();
    Path confDir = dataDir.toPath().resolve("conf");
    Files.createDirectories(confDir);
    writeSite(confDir.resolve("core-site.xml"), Map.of(
        "fs.defaultFS", "hdfs://127.0.0.1:" + rpcPort));
    Map<String, String> hdfs = new LinkedHashMap<>();
    hdfs.put("dfs.replication", conf.get("dfs.replication"));
    hdfs.put("dfs.blocksize", Long.toString(blockSize));
    hdfs.put("dfs.namenode.rpc-address", "127.0.0.1:" + rpcPort);
    hdfs.put("dfs.namenode.http-address", "127.0.0.1:" + httpPort);
    hdfs.put("dfs.client.block.write.replace-datanode-on-failure.enable", "false");
    writeSite(confDir.resolve("hdfs-site.xml"), hdfs);
    return new MiniDfs(cluster, confDir, rpcPort, httpPort);
  }

  private void serve() throws IOException {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      line = line.trim();
      if (line.isEmpty()) {
        continue;
      }
      String[] parts = line.split("\\s+");
      String command = parts[0];
      if (command.equals("shutdown")) {
        break;
      }
      String answer;
      try {
        answer = handle(command, parts);
      } catch (Throwable t) {
        t.printStackTrace();
        answer = "{\"event\": \"error\", \"command\": " + json(line) + ", \"error\": "
            + json(String.valueOf(t)) + "}";
      }
      OUT.println(answer);
      OUT.flush();
    }
    cluster.shutdown(true);
    OUT.println("{\"event\": \"shutdown\", \"ok\": true}");
    OUT.flush();
    // Hadoop leaves non-daemon threads behind; the protocol is done, so leave.
    System.exit(0);
  }

  private String handle(String command, String[] parts) throws IOException {
    switch (command) {
      case "status":
        return describe("status");
      case "open-files": {
        // Files still open for write (under construction), as the NameNode sees them.
        List<String> paths = new ArrayList<>();
        org.apache.hadoop.fs.RemoteIterator<org.apache.hadoop.hdfs.protocol.OpenFileEntry> it =
            cluster.getFileSystem().listOpenFiles(
                java.util.EnumSet.of(
                    org.apache.hadoop.hdfs.protocol.OpenFilesIterator.OpenFilesType.ALL_OPEN_FILES),
                "/");
        while (it.hasNext()) {
          paths.add(json(it.next().getFilePath()));
        }
        return "{\"event\": \"open-files\", \"ok\": true, \"paths\": ["
            + String.join(", ", paths) + "]}";
      }
      case "lease-period": {
        // The NameNode's lease limits (ms): a soft limit of a few seconds lets a test
        // see a dead writer's lease recovered without waiting out the default 60 s.
        cluster.setLeasePeriod(Long.parseLong(parts[1]), Long.parseLong(parts[2]));
        return describe(command);
      }
      case "restart-namenode":
        stopNameNodeHttp();
        cluster.restartNameNode(0, true);
        cluster.waitActive();
        return describe(command);
      case "stop-namenode":
        stopNameNodeHttp();
        cluster.shutdownNameNode(0);
        return describe(command);
      case "start-namenode":
        // restartNameNode() stops a running NameNode first and reuses the bound ports.
        stopNameNodeHttp();
        cluster.restartNameNode(0, true);
        cluster.waitActive();
        return describe(command);
      case "stop-datanode": {
        int index = Integer.parseInt(parts[1]);
        if (stopped.containsKey(index)) {
          throw new IllegalStateException("datanode " + index + " is already stopped");
        }
        DataNode dn = datanode(index);
        MiniDFSCluster.DataNodeProperties props = cluster.stopDataNode(dn.getDisplayName());
        stopped.put(index, props);
        return describe(command);
      }
      case "start-datanode": {
        int index = Integer.parseInt(parts[1]);
        MiniDFSCluster.DataNodeProperties props = stopped.remove(index);
        if (props == null) {
          throw new IllegalStateException("datanode " + index + " is not stopped");
        }
        cluster.restartDataNode(props, true);
        cluster.waitActive();
        return describe(command);
      }
      default:
        throw new IllegalArgumentException("unknown command " + command);
    }
  }

  /**
   * Stops the NameNode's HTTP server while its RPC server still runs.
   *
   * <p>NameNode.stop() stops RPC first. A WebHDFS request that arrived just before then
   * waits in ExternalCall.get() for an RPC answer that never comes, and the HTTP server's
   * stop waits for that request: about 60 s (Jetty's graceful stop), or 30 s more
   * (its thread pool) without the StatisticsHandler. Seen in jstack in 9 of 15 runs of
   * the restart test. Stopped first, the server lets such a request finish in
   * milliseconds; the NameNode's own stop() then finds it stopped.
   */
  private void stopNameNodeHttp() {
    NameNode nn = cluster.getNameNode(0);
    if (nn == null || nn.getHttpServer() == null) {
      return;
    }
    try {
      nn.getHttpServer().stop();
    } catch (Exception e) {
      System.err.println("stopping the NameNode HTTP server first failed: " + e);
    }
  }

  private DataNode datanode(int index) {
    int port = xferPorts.get(index);
    for (DataNode dn : cluster.getDataNodes()) {
      if (dn.getXferPort() == port) {
        return dn;
      }
    }
    throw new IllegalStateException("datanode " + index + " is not running");
  }

  private String describe(String event) {
    StringBuilder sb = new StringBuilder();
    sb.append("{\"event\": ").append(json(event)).append(", \"ok\": true");
    sb.append(", \"host\": \"127.0.0.1\"");
    sb.append(", \"rpc_port\": ").append(rpcPort);
    sb.append(", \"http_port\": ").append(httpPort);
    sb.append(", \"uri\": ").append(json("hdfs://127.0.0.1:" + rpcPort));
    sb.append(", \"conf_dir\": ").append(json(confDir.toString()));
    sb.append(", \"superuser\": ").append(json(System.getProperty("user.name")));
    sb.append(", \"namenode_up\": ").append(cluster.getNameNode(0) != null);
    List<String> dns = new ArrayList<>();
    for (DataNode dn : cluster.getDataNodes()) {
      dns.add("{\"xfer_port\": " + dn.getXferPort() + ", \"http_port\": " + dn.getInfoPort()
          + ", \"ipc_port\": " + dn.getIpcPort() + "}");
    }
    sb.append(", \"datanodes\": [").append(String.join(", ", dns)).append("]");
    sb.append(", \"stopped_datanodes\": ").append(stopped.keySet());
    sb.append("}");
    return sb.toString();
  }

  private static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
      s.setReuseAddress(true);
      return s.getLocalPort();
    }
  }

  private static void writeSite(Path file, Map<String, String> props) throws IOException {
    try (Writer w = Files.newBufferedWriter(file, StandardCharsets.UTF_8)) {
      w.write("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<configuration>\n");
      for (Map.Entry<String, String> e : props.entrySet()) {
        w.write("  <property><name>" + e.getKey() + "</name><value>" + e.getValue()
            + "</value></property>\n");
      }
      w.write("</configuration>\n");
    }
  }

  private static String json(String s) {
    StringBuilder sb = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> sb.append("\\\"");
        case '\\' -> sb.append("\\\\");
        case '\n' -> sb.append("\\n");
        case '\r' -> sb.append("\\r");
        case '\t' -> sb.append("\\t");
        default -> {
          if (c < 0x20) {
            sb.append(String.format("\\u%04x", (int) c));
          } else {
            sb.append(c);
          }
        }
      }
    }
    return sb.append('"').toString();
  }
}
