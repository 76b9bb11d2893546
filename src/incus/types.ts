/** The parts of Incus objects this tool reads. */
export interface Instance {
  name: string;
  project?: string;
  type: 'container' | 'virtual-machine';
  status: string; // Running, Stopped, Frozen, ...
  status_code: number;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  /** Its own devices and its profiles' (what it runs with). */
  expanded_devices?: Record<string, Record<string, string>>;
  profiles: string[];
  ephemeral: boolean;
  stateful: boolean;
  description: string;
  architecture: string;
  created_at?: string;
  last_used_at?: string;
}

export interface StorageVolume {
  name: string;
  type: string;
  content_type: 'filesystem' | 'block' | 'iso';
  config: Record<string, string>;
  description: string;
  used_by: string[];
  location?: string;
  project?: string;
  pool?: string;
  created_at?: string;
}

export interface Project {
  name: string;
  config: Record<string, string>;
  description: string;
  used_by?: string[];
}

export interface Snapshot {
  name: string;
  created_at: string;
  expires_at?: string;
}
