<?php
/**
 * mimir testbed: WordPress's object cache kept in Redis (the `redis` Service), as the redis-cache plugin does.
 * A request keeps what it read in memory; a miss asks Redis, a write goes to both. Groups WordPress marks
 * non-persistent stay in memory.
 */
class Mimir_Redis_Object_Cache {
	private $redis;
	private $ok = false;
	private $local = array();
	private $global_groups = array();
	private $non_persistent = array();
	private $blog = 1;

	public function __construct() {
		$this->redis = new Redis();
		try {
			$this->ok = $this->redis->connect( WP_REDIS_HOST, 6379, 1.0 );
		} catch ( Exception $e ) {
			$this->ok = false;
		}
	}

	private function key( $key, $group ) {
		$group = ( '' === $group ) ? 'default' : $group;
		$scope = isset( $this->global_groups[ $group ] ) ? 0 : $this->blog;
		return "wp:$scope:$group:$key";
	}

	private function persistent( $group ) {
		return $this->ok && ! isset( $this->non_persistent[ ( '' === $group ) ? 'default' : $group ] );
	}

	public function get( $key, $group, $force, &$found ) {
		$k = $this->key( $key, $group );
		if ( ! $force && array_key_exists( $k, $this->local ) ) {
			$found = true;
			return is_object( $this->local[ $k ] ) ? clone $this->local[ $k ] : $this->local[ $k ];
		}
		if ( $this->persistent( $group ) ) {
			$value = $this->redis->get( $k );
			if ( false !== $value ) {
				$found = true;
				$value = unserialize( $value );
				$this->local[ $k ] = $value;
				return $value;
			}
		}
		$found = false;
		return false;
	}

	public function set( $key, $data, $group, $expire ) {
		$k = $this->key( $key, $group );
		$this->local[ $k ] = is_object( $data ) ? clone $data : $data;
		if ( $this->persistent( $group ) ) {
			$text = serialize( $data );
			( $expire > 0 ) ? $this->redis->setex( $k, (int) $expire, $text ) : $this->redis->set( $k, $text );
		}
		return true;
	}

	public function add( $key, $data, $group, $expire ) {
		$found = false;
		$this->get( $key, $group, false, $found );
		return $found ? false : $this->set( $key, $data, $group, $expire );
	}

	public function replace( $key, $data, $group, $expire ) {
		$found = false;
		$this->get( $key, $group, false, $found );
		return $found ? $this->set( $key, $data, $group, $expire ) : false;
	}

	public function delete( $key, $group ) {
		$k = $this->key( $key, $group );
		unset( $this->local[ $k ] );
		if ( $this->persistent( $group ) ) {
			$this->redis->del( $k );
		}
		return true;
	}

	public function incr( $key, $offset, $group ) {
		$found = false;
		$value = $this->get( $key, $group, false, $found );
		if ( ! $found ) {
			return false;
		}
		$value = max( 0, (int) $value + (int) $offset );
		$this->set( $key, $value, $group, 0 );
		return $value;
	}

	public function flush() {
		$this->local = array();
		if ( $this->ok ) {
			$this->redis->flushDb();
		}
		return true;
	}

	public function flush_runtime() {
		$this->local = array();
		return true;
	}

	public function add_global_groups( $groups ) {
		foreach ( (array) $groups as $group ) {
			$this->global_groups[ $group ] = true;
		}
	}

	public function add_non_persistent_groups( $groups ) {
		foreach ( (array) $groups as $group ) {
			$this->non_persistent[ $group ] = true;
		}
	}

	public function switch_to_blog( $blog_id ) {
		$this->blog = (int) $blog_id;
	}
}

function wp_cache_init() {
	$GLOBALS['wp_object_cache'] = new Mimir_Redis_Object_Cache();
}
function wp_cache_get( $key, $group = '', $force = false, &$found = null ) {
	return $GLOBALS['wp_object_cache']->get( $key, $group, $force, $found );
}
function wp_cache_set( $key, $data, $group = '', $expire = 0 ) {
	return $GLOBALS['wp_object_cache']->set( $key, $data, $group, $expire );
}
function wp_cache_add( $key, $data, $group = '', $expire = 0 ) {
	return $GLOBALS['wp_object_cache']->add( $key, $data, $group, $expire );
}
function wp_cache_replace( $key, $data, $group = '', $expire = 0 ) {
	return $GLOBALS['wp_object_cache']->replace( $key, $data, $group, $expire );
}
function wp_cache_delete( $key, $group = '' ) {
	return $GLOBALS['wp_object_cache']->delete( $key, $group );
}
function wp_cache_incr( $key, $offset = 1, $group = '' ) {
	return $GLOBALS['wp_object_cache']->incr( $key, $offset, $group );
}
function wp_cache_decr( $key, $offset = 1, $group = '' ) {
	return $GLOBALS['wp_object_cache']->incr( $key, -$offset, $group );
}
function wp_cache_flush() {
	return $GLOBALS['wp_object_cache']->flush();
}
function wp_cache_flush_runtime() {
	return $GLOBALS['wp_object_cache']->flush_runtime();
}
function wp_cache_close() {
	return true;
}
function wp_cache_add_global_groups( $groups ) {
	$GLOBALS['wp_object_cache']->add_global_groups( $groups );
}
function wp_cache_add_non_persistent_groups( $groups ) {
	$GLOBALS['wp_object_cache']->add_non_persistent_groups( $groups );
}
function wp_cache_switch_to_blog( $blog_id ) {
	$GLOBALS['wp_object_cache']->switch_to_blog( $blog_id );
}
function wp_cache_reset() {
	return $GLOBALS['wp_object_cache']->flush_runtime();
}
